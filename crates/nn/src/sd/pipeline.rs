//! Text to image with a latent diffusion model: prompts -> tokens -> text context; DDIM over the
//! latent with classifier-free guidance (the empty prompt's unconditional branch batched with the
//! conditional one); the VAE decoder to pixels. Generic over `Backend`, like the models.
//!
//! The DDIM loop here is deterministic (eta = 0) and uses only public scheduler scalars, so under
//! MPC each step is local work on shares besides the U-Net itself.

use std::path::Path;

use super::autoencoder_kl::{AutoencoderKL, VaeParts};
use super::clip_text::{one_hot, ClipTextTransformer};
use super::config::StableDiffusionConfig;
use super::tokenizer::WordTokenizer;
use super::unet_2d_condition::UNet2DConditionModel;
use super::weights::WeightsFile;
use crate::{Backend, Error, Result};

/// The files of a model directory such as `models/mnist-sd/`.
pub struct ModelFiles {
    pub config: StableDiffusionConfig,
    pub tokenizer: WordTokenizer,
    pub vae: WeightsFile,
    pub unet: WeightsFile,
    pub text_encoder: WeightsFile,
}

impl ModelFiles {
    pub fn load(dir: &Path) -> Result<Self> {
        let config = StableDiffusionConfig::from_file(&dir.join("config.toml"))?;
        let tokenizer = WordTokenizer::from_file(
            &dir.join("vocab.txt"),
            config.text_encoder.max_position_embeddings,
        )?;
        if tokenizer.vocab_size() != config.text_encoder.vocab_size {
            return Err(Error::Config(format!(
                "vocab.txt has {} tokens but text_encoder.vocab_size is {}",
                tokenizer.vocab_size(),
                config.text_encoder.vocab_size
            )));
        }
        Ok(ModelFiles {
            tokenizer,
            vae: WeightsFile::load(&dir.join("vae.safetensors"))?,
            unet: WeightsFile::load(&dir.join("unet.safetensors"))?,
            text_encoder: WeightsFile::load(&dir.join("text_encoder.safetensors"))?,
            config,
        })
    }

    /// The latent scaling factor: the config's, else the one training measured and stored.
    pub fn scaling_factor(&self) -> Result<f32> {
        scaling_factor(&self.config, &self.vae)
    }
}

/// The config's `vae.scaling_factor`, else the `scaling_factor` metadata of the VAE weights.
pub fn scaling_factor(config: &StableDiffusionConfig, vae: &WeightsFile) -> Result<f32> {
    if let Some(s) = config.vae.scaling_factor {
        return Ok(s);
    }
    vae.metadata
        .get("scaling_factor")
        .and_then(|s| s.parse::<f32>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .ok_or_else(|| Error::File {
            path: vae.path.clone(),
            detail: "no vae.scaling_factor in the config and no `scaling_factor` metadata".into(),
        })
}

pub struct TextToImage<B: Backend> {
    pub config: StableDiffusionConfig,
    pub tokenizer: WordTokenizer,
    pub text_encoder: ClipTextTransformer<B>,
    pub unet: UNet2DConditionModel<B>,
    pub vae: AutoencoderKL<B>,
    pub scaling_factor: f32,
    alphas_cumprod: Vec<f64>,
}

/// Sampling settings.
#[derive(Clone, Copy, Debug)]
pub struct SampleOptions {
    pub steps: usize,
    /// Classifier-free guidance scale; 1 means no guidance (and no unconditional branch).
    pub guidance: f32,
}

impl<B: Backend> TextToImage<B> {
    /// Builds the pipeline from a model directory's files; `make` turns a weight into the
    /// backend's parameter.
    pub fn new(
        backend: &B,
        files: &ModelFiles,
        mut make: impl FnMut(&B, &[usize], Vec<f32>) -> Result<B::Param>,
    ) -> Result<Self> {
        let c = &files.config;
        let text_encoder = {
            let mut src = files.text_encoder.source(&mut make);
            ClipTextTransformer::new(backend, &mut src, "text_model", &c.text_encoder)?
        };
        let unet = {
            let mut src = files.unet.source(&mut make);
            UNet2DConditionModel::new(backend, &mut src, "", &c.unet)?
        };
        let vae = {
            let mut src = files.vae.source(&mut make);
            AutoencoderKL::new(backend, &mut src, "", &c.vae, VaeParts::DecoderOnly)?
        };
        Ok(TextToImage {
            config: c.clone(),
            tokenizer: files.tokenizer.clone(),
            text_encoder,
            unet,
            vae,
            scaling_factor: files.scaling_factor()?,
            alphas_cumprod: c.scheduler.alphas_cumprod()?,
        })
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
        let alphas_cumprod = config.scheduler.alphas_cumprod()?;
        Ok(TextToImage {
            config,
            tokenizer,
            text_encoder,
            unet,
            vae,
            scaling_factor,
            alphas_cumprod,
        })
    }

    /// One-hot token rows (N, L, vocab) for prompts, as a public tensor.
    pub fn tokens(&self, b: &B, prompts: &[String]) -> Result<B::Tensor> {
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| self.tokenizer.encode(p)).collect();
        let v = self.config.text_encoder.vocab_size;
        b.public(
            &[prompts.len(), self.tokenizer.max_len(), v],
            &one_hot(&ids, v)?,
        )
    }

    /// The DDIM timesteps for `steps` steps ("leading" spacing, offset 1 as SD's scheduler).
    pub fn timesteps(&self, steps: usize) -> Result<Vec<usize>> {
        let t = self.alphas_cumprod.len();
        if steps == 0 || steps > t {
            return Err(Error::Config(format!(
                "steps must be in 1..={t}, got {steps}"
            )));
        }
        let stride = t / steps;
        Ok((0..steps)
            .rev()
            .map(|i| (i * stride + 1).min(t - 1))
            .collect())
    }

    /// The guided noise prediction for latents `x` (N, C, h, w) at timestep `t`: with guidance
    /// g != 1, one U-Net call on the batch [x; x] with contexts [uncond; cond], then
    /// `eps_u + g (eps_c - eps_u)`.
    pub fn guided_eps(
        &self,
        b: &B,
        x: &B::Tensor,
        t: usize,
        cond: &B::Tensor,
        uncond: Option<&B::Tensor>,
        guidance: f32,
    ) -> Result<B::Tensor> {
        let n = b.shape(x)[0];
        match uncond {
            Some(u) if guidance != 1.0 => {
                let xx = b.concat(&[x, x], 0)?;
                let ctx = b.concat(&[u, cond], 0)?;
                let eps = self.unet.forward(b, &xx, &vec![t as f32; 2 * n], &ctx)?;
                let eu = b.narrow(&eps, 0, 0, n)?;
                let ec = b.narrow(&eps, 0, n, n)?;
                b.add(&eu, &b.scale(&b.sub(&ec, &eu)?, guidance)?)
            }
            _ => self.unet.forward(b, x, &vec![t as f32; n], cond),
        }
    }

    /// Images (N, C, H, W) in [-1, 1] for `prompts`, from the client's initial latent noise
    /// `noise` (N * C * h * w standard normal values).
    pub fn sample(
        &self,
        b: &B,
        prompts: &[String],
        noise: &[f32],
        opts: SampleOptions,
        mut on_step: impl FnMut(usize),
    ) -> Result<B::Tensor> {
        let n = prompts.len();
        let (c, s) = (self.config.vae.latent_channels, self.config.latent_size());
        if noise.len() != n * c * s * s {
            return Err(Error::shape(
                "sample",
                format!(
                    "{} noise values for {n} latents of {c}x{s}x{s}",
                    noise.len()
                ),
            ));
        }
        let cond = self.text_encoder.forward(b, &self.tokens(b, prompts)?)?;
        let uncond = if opts.guidance != 1.0 {
            let empty = vec![String::new(); n];
            Some(self.text_encoder.forward(b, &self.tokens(b, &empty)?)?)
        } else {
            None
        };
        let mut x = b.public(&[n, c, s, s], noise)?;
        let ts = self.timesteps(opts.steps)?;
        for (i, &t) in ts.iter().enumerate() {
            let eps = self.guided_eps(b, &x, t, &cond, uncond.as_ref(), opts.guidance)?;
            let a = self.alphas_cumprod[t];
            let a_prev = match ts.get(i + 1) {
                Some(&tp) => self.alphas_cumprod[tp],
                None => self.alphas_cumprod[0],
            };
            // x0 = (x - sqrt(1-a) eps) / sqrt(a); x_prev = sqrt(a_prev) x0 + sqrt(1-a_prev) eps,
            // written as one linear combination of x and eps.
            let cx = (a_prev / a).sqrt();
            let ce = (1.0 - a_prev).sqrt() - (a_prev * (1.0 - a) / a).sqrt();
            x = b.add(&b.scale(&x, cx as f32)?, &b.scale(&eps, ce as f32)?)?;
            on_step(i);
        }
        let z = b.scale(&x, 1.0 / self.scaling_factor)?;
        self.vae.decode(b, &z)
    }
}
