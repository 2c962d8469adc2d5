//! Text to image with a latent diffusion model of the Stable Diffusion family: prompts -> tokens
//! -> text context; this crate's DDIM over the latent, with classifier-free guidance as a wrapper
//! of the denoiser closure; the VAE decoder to pixels. Generic over `Backend`, like the models.
//!
//! The sampler is diffusers' `DDIMScheduler` as Stable Diffusion configures it: "leading" timestep
//! spacing with `steps_offset = 1` (our [`Spacing::Uniform`]), eta = 0, no clipping of the
//! predicted latent, and `set_alpha_to_one = false` (the last step targets alpha_bar[0], as our
//! DDIM always does). Every coefficient is a public scalar, so under MPC a step is local work on
//! shares besides the U-Net itself.

use nn::sd::clip_text::{one_hot, ClipTextTransformer};
use nn::sd::model_files::ModelFiles;
use nn::sd::shares::TEXT_ENCODER_PREFIX;
use nn::sd::{
    AutoencoderKL, SchedulerConfig, StableDiffusionConfig, UNet2DConditionModel, VaeParts,
    WordTokenizer,
};
use nn::{Backend, ParamSource};

use crate::{DdimConfig, Error, Result, Sampler, Schedule, SduTargets, SeededNoise, Spacing};

pub struct TextToImage<B: Backend> {
    pub config: StableDiffusionConfig,
    pub tokenizer: WordTokenizer,
    pub text_encoder: ClipTextTransformer<B>,
    pub unet: UNet2DConditionModel<B>,
    pub vae: AutoencoderKL<B>,
    pub scaling_factor: f32,
    pub schedule: Schedule,
}

/// Sampling settings.
#[derive(Clone, Copy, Debug)]
pub struct SampleOptions {
    pub steps: usize,
    /// Classifier-free guidance scale; 1 means no guidance (and no unconditional branch).
    pub guidance: f32,
}

/// The schedule of a model's `[scheduler]` config (betas computed in f64 as diffusers does, then
/// held in f32 like every other schedule of this crate).
pub fn schedule_of(config: &SchedulerConfig) -> Result<Schedule> {
    Schedule::from_betas(config.betas()?.into_iter().map(|b| b as f32).collect())
}

/// Stable Diffusion's deterministic DDIM with `steps` steps (see the module comment).
pub fn sd_ddim(steps: usize) -> Sampler {
    Sampler::Ddim(DdimConfig {
        steps,
        eta: 0.0,
        spacing: Spacing::Uniform,
        clip_x0: false,
    })
}

/// Classifier-free guidance around a U-Net, as a denoiser closure for [`Sampler::sample`]. With
/// an unconditional context and g != 1, one U-Net call on the batch [x; x] with contexts
/// [uncond; cond], then `eps_u + g (eps_c - eps_u)`; otherwise the conditional prediction.
pub fn guided<'a, B: Backend>(
    b: &'a B,
    unet: &'a UNet2DConditionModel<B>,
    cond: &'a B::Tensor,
    uncond: Option<&'a B::Tensor>,
    guidance: f32,
) -> impl FnMut(&B::Tensor, usize) -> nn::Result<B::Tensor> + 'a {
    move |x, t| Ok(guided_parts(b, unet, (cond, uncond, guidance), x, t)?.0)
}

/// The guided prediction at (x, t) and, when guidance mixed in an unconditional branch, the
/// conditional branch's own prediction (SDU's correction needs it).
fn guided_parts<B: Backend>(
    b: &B,
    unet: &UNet2DConditionModel<B>,
    (cond, uncond, guidance): (&B::Tensor, Option<&B::Tensor>, f32),
    x: &B::Tensor,
    t: usize,
) -> nn::Result<(B::Tensor, Option<B::Tensor>)> {
    let n = b.shape(x)[0];
    match uncond {
        Some(u) if guidance != 1.0 => {
            let xx = b.concat(&[x, x], 0)?;
            let ctx = b.concat(&[u, cond], 0)?;
            let eps = unet.forward(b, &xx, &vec![t as f32; 2 * n], &ctx)?;
            let eu = b.narrow(&eps, 0, 0, n)?;
            let ec = b.narrow(&eps, 0, n, n)?;
            let mixed = b.add(&eu, &b.scale(&b.sub(&ec, &eu)?, guidance)?)?;
            Ok((mixed, Some(ec)))
        }
        _ => Ok((unet.forward(b, x, &vec![t as f32; n], cond)?, None)),
    }
}

/// The prompts' one-hot token rows: their shape (N, L, vocab) and values (what the client
/// secret-shares under MPC).
pub fn token_rows(
    tokenizer: &WordTokenizer,
    config: &StableDiffusionConfig,
    prompts: &[String],
) -> Result<([usize; 3], Vec<f32>)> {
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| tokenizer.encode(p)).collect();
    let v = config.text_encoder.vocab_size;
    Ok(([prompts.len(), tokenizer.max_len(), v], one_hot(&ids, v)?))
}

impl<B: Backend> TextToImage<B> {
    /// Builds the pipeline from a model directory's files; `make` turns a weight into the
    /// backend's parameter.
    pub fn new(
        backend: &B,
        files: &ModelFiles,
        make: impl FnMut(&B, &[usize], Vec<f32>) -> nn::Result<B::Param>,
    ) -> Result<Self> {
        // One `make` for three sources, which the models use one after the other.
        let make = std::cell::RefCell::new(make);
        let make = |b: &B, shape: &[usize], data: Vec<f32>| (make.borrow_mut())(b, shape, data);
        let mut text = files.text_encoder.source(&make);
        let mut unet = files.unet.source(&make);
        let mut vae = files.vae.source(&make);
        Self::from_sources(
            backend,
            files.config.clone(),
            files.tokenizer.clone(),
            files.scaling_factor()?,
            [&mut text, &mut unet, &mut vae],
        )
    }

    /// Builds the pipeline from one parameter source per model, in the order text encoder,
    /// U-Net, VAE (decoder half): a model directory's files, or on the `Mpc` backend a party's
    /// shares (`nn::sd::SdShares`).
    pub fn from_sources(
        backend: &B,
        config: StableDiffusionConfig,
        tokenizer: WordTokenizer,
        scaling_factor: f32,
        [text, unet, vae]: [&mut dyn ParamSource<B>; 3],
    ) -> Result<Self> {
        let c = &config;
        let text_encoder =
            ClipTextTransformer::new(backend, text, TEXT_ENCODER_PREFIX, &c.text_encoder)?;
        let unet = UNet2DConditionModel::new(backend, unet, "", &c.unet)?;
        let vae = AutoencoderKL::new(backend, vae, "", &c.vae, VaeParts::DecoderOnly)?;
        Self::from_parts(config, tokenizer, text_encoder, unet, vae, scaling_factor)
    }

    /// Assembles a pipeline from parts built elsewhere (e.g. while training).
    pub fn from_parts(
        config: StableDiffusionConfig,
        tokenizer: WordTokenizer,
        text_encoder: ClipTextTransformer<B>,
        unet: UNet2DConditionModel<B>,
        vae: AutoencoderKL<B>,
        scaling_factor: f32,
    ) -> Result<Self> {
        let schedule = schedule_of(&config.scheduler)?;
        Ok(TextToImage {
            config,
            tokenizer,
            text_encoder,
            unet,
            vae,
            scaling_factor,
            schedule,
        })
    }

    /// One-hot token rows (N, L, vocab) for prompts, as a public tensor.
    pub fn tokens(&self, b: &B, prompts: &[String]) -> Result<B::Tensor> {
        let (shape, rows) = token_rows(&self.tokenizer, &self.config, prompts)?;
        Ok(b.public(&shape, &rows)?)
    }

    /// Images (N, C, H, W) in [-1, 1] for `prompts`, from the client's initial latent noise
    /// `noise` (N * C * h * w standard normal values); `on_step(i)` after step i (0-based).
    pub fn sample(
        &self,
        b: &B,
        prompts: &[String],
        noise: &[f32],
        opts: SampleOptions,
        on_step: impl FnMut(usize),
    ) -> Result<B::Tensor> {
        self.sample_with(b, prompts, noise, opts, None, on_step)
    }

    /// [`TextToImage::sample`] with SDU's targets, if any (see [`TextToImage::sample_from`]).
    pub fn sample_with(
        &self,
        b: &B,
        prompts: &[String],
        noise: &[f32],
        opts: SampleOptions,
        sdu: Option<&SduTargets<B>>,
        on_step: impl FnMut(usize),
    ) -> Result<B::Tensor> {
        let n = prompts.len();
        let (c, s) = (self.config.vae.latent_channels, self.config.latent_size());
        if noise.len() != n * c * s * s {
            return Err(Error::Noise(format!(
                "{} noise values for {n} latents of {c}x{s}x{s}",
                noise.len()
            )));
        }
        let x_t = b.public(&[n, c, s, s], noise)?;
        self.sample_from(b, &self.tokens(b, prompts)?, x_t, opts, sdu, on_step)
    }

    /// [`TextToImage::sample`] on inputs that are already the backend's tensors: the prompts'
    /// one-hot token rows (N, L, vocab) and x_T (N, C, h, w). On the `Mpc` backend both are the
    /// client's secret shares, so the parties run the text encoder, every guided U-Net step and
    /// the VAE decoder without seeing the prompt, the noise or the image (PIDM's setting); the
    /// unconditional branch's empty prompt is public.
    ///
    /// With `sdu`, every step's prediction is corrected towards its target (PIDM's score
    /// distillation, `crate::sdu`): one target per step, of x_T's shape (on `Mpc`, the client's
    /// shares: they depend on x_T).
    pub fn sample_from(
        &self,
        b: &B,
        tokens: &B::Tensor,
        x_t: B::Tensor,
        opts: SampleOptions,
        sdu: Option<&SduTargets<B>>,
        mut on_step: impl FnMut(usize),
    ) -> Result<B::Tensor> {
        let (c, s) = (self.config.vae.latent_channels, self.config.latent_size());
        let (l, v) = (
            self.tokenizer.max_len(),
            self.config.text_encoder.vocab_size,
        );
        let n = b.shape(tokens)[0];
        if b.shape(tokens) != [n, l, v] || b.shape(&x_t) != [n, c, s, s] {
            return Err(Error::Inputs(format!(
                "tokens {:?} and x_T {:?} do not fit this model: it takes ({n}, {l}, {v}) \
                 and ({n}, {c}, {s}, {s})",
                b.shape(tokens),
                b.shape(&x_t)
            )));
        }
        let sampler = sd_ddim(opts.steps);
        // Check the step count and the SDU targets before the text encoder runs.
        sampler.timesteps(&self.schedule)?;
        if let Some(targets) = sdu {
            targets.check(b, opts.steps, &[n, c, s, s])?;
        }
        let cond = self.text_encoder.forward(b, tokens)?;
        let uncond = if opts.guidance != 1.0 {
            let empty = vec![String::new(); n];
            Some(self.text_encoder.forward(b, &self.tokens(b, &empty)?)?)
        } else {
            None
        };
        let guide = (&cond, uncond.as_ref(), opts.guidance);
        let mut step = 0;
        let denoise = |x: &B::Tensor, t: usize| -> nn::Result<B::Tensor> {
            let (mixed, cond_only) = guided_parts(b, &self.unet, guide, x, t)?;
            let Some(targets) = sdu else {
                return Ok(mixed);
            };
            let k = step;
            step += 1;
            let eps_cond = cond_only.as_ref().unwrap_or(&mixed);
            targets
                .correct(b, &self.schedule, (k, t), &mixed, eps_cond)
                .map_err(|e| match e {
                    Error::Model(e) => e,
                    other => nn::Error::shape("sdu", other),
                })
        };
        // Deterministic DDIM (eta = 0) never draws step noise.
        let mut no_noise = SeededNoise::new(0);
        let x = sampler.sample(b, &self.schedule, x_t, denoise, &mut no_noise, |step| {
            on_step(step.done - 1)
        })?;
        let z = b.scale(&x, 1.0 / self.scaling_factor)?;
        Ok(self.vae.decode(b, &z)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nn::{Plain, PlainTensor};

    fn sd_v1_5_scheduler() -> SchedulerConfig {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: "scaled_linear".into(),
        }
    }

    /// diffusers' `DDIMScheduler` as Stable Diffusion configures it (leading spacing,
    /// steps_offset 1, eta 0, clip_sample off, set_alpha_to_one off), written out in f64.
    fn diffusers_ddim(
        alphas_cumprod: &[f64],
        steps: usize,
        x: &[f64],
        eps: impl Fn(&[f64], usize) -> Vec<f64>,
    ) -> (Vec<usize>, Vec<f64>) {
        let ratio = alphas_cumprod.len() / steps;
        let timesteps: Vec<usize> = (0..steps).rev().map(|i| i * ratio + 1).collect();
        let final_alpha_cumprod = alphas_cumprod[0];
        let mut x = x.to_vec();
        for &t in &timesteps {
            let e = eps(&x, t);
            let a = alphas_cumprod[t];
            let a_prev = t
                .checked_sub(ratio)
                .map_or(final_alpha_cumprod, |p| alphas_cumprod[p]);
            x = x
                .iter()
                .zip(&e)
                .map(|(xi, ei)| {
                    let x0 = (xi - (1.0 - a).sqrt() * ei) / a.sqrt();
                    a_prev.sqrt() * x0 + (1.0 - a_prev).sqrt() * ei
                })
                .collect();
        }
        (timesteps, x)
    }

    #[test]
    fn sd_ddim_is_diffusers_ddim_scheduler() {
        let cfg = sd_v1_5_scheduler();
        let alphas = cfg.alphas_cumprod().unwrap();
        let schedule = schedule_of(&cfg).unwrap();
        for (t, a) in alphas.iter().enumerate() {
            assert!((schedule.alpha_bars[t] as f64 - a).abs() < 1e-5 * a.max(1e-2));
        }
        // A denoiser that depends on x and t, so that every coefficient matters.
        let eps = |x: &[f64], t: usize| -> Vec<f64> {
            x.iter()
                .enumerate()
                .map(|(i, v)| 0.3 * v + (t as f64 * 0.01 + i as f64).sin())
                .collect()
        };
        let x_t = [0.7, -1.2, 0.05, 2.0, -0.4, 1.1];
        for steps in [1, 10, 50] {
            let (want_ts, want) = diffusers_ddim(&alphas, steps, &x_t, eps);
            let sampler = sd_ddim(steps);
            assert_eq!(sampler.timesteps(&schedule).unwrap(), want_ts);
            let x =
                PlainTensor::new(&[1, 1, 2, 3], x_t.iter().map(|&v| v as f32).collect()).unwrap();
            let got = sampler
                .sample(
                    &Plain,
                    &schedule,
                    x,
                    |x, t| {
                        let xs: Vec<f64> = x.data().iter().map(|&v| v as f64).collect();
                        PlainTensor::new(
                            &[1, 1, 2, 3],
                            eps(&xs, t).iter().map(|&v| v as f32).collect(),
                        )
                    },
                    &mut SeededNoise::new(0),
                    |_| {},
                )
                .unwrap();
            for (g, w) in got.data().iter().zip(&want) {
                assert!(
                    (*g as f64 - w).abs() < 1e-3 * w.abs().max(1.0),
                    "{steps} steps: {g} vs diffusers {w}"
                );
            }
        }
    }
}
