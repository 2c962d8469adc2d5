//! Training the denoiser: the U-Net and the text encoder together (ours has no pretrained CLIP),
//! on latents of the frozen VAE, with the standard epsilon-prediction loss and 10% empty prompts
//! so that classifier-free guidance has an unconditional model to push away from.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Var;
use diffusion::{SampleOptions, TextToImage};
use nn::sd::model_files::{scaling_factor, ModelFiles};
use nn::sd::tokenizer::{prompt_for, TEMPLATES};
use nn::sd::weights::WeightsFile;
use nn::sd::{
    AutoencoderKL, ClipTextTransformer, StableDiffusionConfig, UNet2DConditionModel, VaeParts,
    WordTokenizer,
};
use nn::{Plain, PlainTensor, Result};
use rand::Rng;

use crate::autoencoder::encode_all;
use crate::backend::{ce, Candle};
use crate::config::TrainConfig;
use crate::data::{batch_indices, training_digits};
use crate::fit::{fit, FitReport, RunFiles};
use crate::params::{normal, Params};

/// Prefix of the text encoder's parameters inside the joint parameter set (and its file).
const TEXT_PREFIX: &str = "text_model";

fn frozen(b: &Candle, shape: &[usize], data: Vec<f32>) -> Result<Var> {
    Var::from_slice(&data, shape, &b.device).map_err(ce)
}

/// A training prompt for `digit`: a random template, or (with probability `empty`) "".
pub fn training_prompt(rng: &mut impl Rng, digit: usize, empty: f64) -> String {
    if rng.random::<f64>() < empty {
        String::new()
    } else {
        prompt_for(digit, rng.random_range(0..TEMPLATES.len()))
    }
}

pub fn train(cfg: &TrainConfig, out: &Path, resume: bool) -> Result<FitReport> {
    let model = StableDiffusionConfig::from_file(&cfg.model_config)?;
    let model_dir = cfg.model_config.parent().unwrap_or(Path::new("."));
    let tokenizer = WordTokenizer::from_file(
        &model_dir.join("vocab.txt"),
        model.text_encoder.max_position_embeddings,
    )?;
    let digits = training_digits(cfg)?;
    let b = Candle::default();

    // The frozen VAE (trained first) turns every training digit into its latent posterior.
    let vae_file = WeightsFile::load(&out.join("vae.safetensors"))?;
    let scale = scaling_factor(&model, &vae_file)?;
    let vae = AutoencoderKL::new(
        &b,
        &mut vae_file.source(frozen),
        "",
        &model.vae,
        VaeParts::Both,
    )?;
    let (means, logvars) = encode_all(&b, &vae, &digits)?;
    let (lc, ls) = (model.vae.latent_channels, model.latent_size());
    let per = lc * ls * ls;

    let mut params = Params::new(cfg.seed.wrapping_add(1));
    let text = ClipTextTransformer::new(&b, &mut params, TEXT_PREFIX, &model.text_encoder)?;
    let n_text = params.count();
    let unet = UNet2DConditionModel::new(&b, &mut params, "", &model.unet)?;
    eprintln!(
        "unet: {} U-Net + {n_text} text-encoder parameters, latent {lc}x{ls}x{ls}, scale {scale:.4}",
        params.count() - n_text
    );
    let alphas = model.scheduler.alphas_cumprod()?;
    let h = &cfg.unet;
    let n = h.batch_size;
    let vocab = model.text_encoder.vocab_size;
    let files = RunFiles::new(out, "unet");
    let (report, ema) = fit(
        "unet",
        &params,
        h,
        cfg.seed.wrapping_add(1),
        &files,
        resume,
        |_, rng| {
            let idx = batch_indices(rng, digits.len(), n);
            let mut xt = Vec::with_capacity(n * per);
            let mut target = Vec::with_capacity(n * per);
            let mut ts = Vec::with_capacity(n);
            let mut ids = Vec::with_capacity(n);
            for &i in &idx {
                let t = rng.random_range(0..alphas.len());
                let (sa, sb) = (alphas[t].sqrt() as f32, (1.0 - alphas[t]).sqrt() as f32);
                for j in i * per..(i + 1) * per {
                    let z = (means[j] + (0.5 * logvars[j].clamp(-30.0, 20.0)).exp() * normal(rng))
                        * scale;
                    let eps = normal(rng);
                    xt.push(sa * z + sb * eps);
                    target.push(eps);
                }
                ts.push(t as f32);
                let prompt =
                    training_prompt(rng, digits.labels[i] as usize, h.empty_prompt_fraction);
                ids.push(tokenizer.encode(&prompt));
            }
            let one_hot = nn::sd::clip_text::one_hot(&ids, vocab)?;
            let tokens = b.tensor(&[n, tokenizer.max_len(), vocab], &one_hot)?;
            let ctx = text.forward(&b, &tokens)?;
            let x = b.tensor(&[n, lc, ls, ls], &xt)?;
            let pred = unet.forward(&b, &x, &ts, &ctx)?;
            let target = b.tensor(&[n, lc, ls, ls], &target)?;
            (pred - target)
                .and_then(|d| d.sqr()?.mean_all())
                .map_err(ce)
        },
    )?;

    for (s, (_, p)) in ema.shadow.iter().zip(&params.entries) {
        p.set(s).map_err(ce)?;
    }
    let snapshot = params.snapshot()?;
    let (text_w, unet_w): (Vec<_>, Vec<_>) = snapshot
        .into_iter()
        .partition(|(name, _, _)| name.starts_with(TEXT_PREFIX));
    nn::sd::weights::save_atomic(
        &out.join("text_encoder.safetensors"),
        &text_w,
        HashMap::new(),
    )?;
    nn::sd::weights::save_atomic(&out.join("unet.safetensors"), &unet_w, HashMap::new())?;

    if h.preview_per_digit > 0 {
        // The preview samples the weights just saved on the Plain backend: sampling on candle
        // Vars would record an autograd graph for every one of the 50 guided steps and grow to
        // tens of GB (a 1,800-step run was OOM-killed here after saving its weights).
        let files = ModelFiles {
            config: model,
            tokenizer,
            vae: vae_file,
            unet: WeightsFile::load(&out.join("unet.safetensors"))?,
            text_encoder: WeightsFile::load(&out.join("text_encoder.safetensors"))?,
        };
        let pipe = TextToImage::new(&Plain, &files, |_, shape, data| {
            PlainTensor::new(shape, data)
        })
        .map_err(sampling_error)?;
        preview(
            &pipe,
            h.preview_per_digit,
            &out.join("samples").join("unet_guidance7.5.png"),
        )?;
    }
    Ok(report)
}

/// A sampling failure as a model error (the trainer reports `nn` errors).
fn sampling_error(e: diffusion::Error) -> nn::Error {
    match e {
        diffusion::Error::Model(e) => e,
        other => nn::Error::Backend(Box::new(other)),
    }
}

/// A grid with one row per digit ("a handwritten {d}"), `per_digit` samples each, 50 DDIM steps
/// at guidance 7.5, from a fixed seed.
pub fn preview(pipe: &TextToImage<Plain>, per_digit: usize, path: &Path) -> Result<()> {
    let n = 10 * per_digit;
    let prompts: Vec<String> = (0..n).map(|k| prompt_for(k / per_digit, 4)).collect();
    let c = &pipe.config;
    let per = c.vae.latent_channels * c.latent_size() * c.latent_size();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
    let noise: Vec<f32> = (0..n * per).map(|_| normal(&mut rng)).collect();
    let opts = SampleOptions {
        steps: 50,
        guidance: 7.5,
    };
    let imgs = pipe
        .sample(&Plain, &prompts, &noise, opts, |_| {})
        .map_err(sampling_error)?;
    nn::sd::grid::write_grid(path, imgs.data(), c.image_size, per_digit)
}
