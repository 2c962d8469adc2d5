//! Training the VAE (`AutoencoderKL`): L1 reconstruction of sampled latents plus a small KL term
//! towards N(0, 1), as Stable Diffusion's first stage (without its perceptual and adversarial
//! losses, which MNIST does not need).

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use nn::sd::mnist::{Digits, SIDE};
use nn::sd::{AutoencoderKL, StableDiffusionConfig, VaeParts};
use nn::{Backend, Result};

use crate::backend::{ce, values, Candle};
use crate::config::TrainConfig;
use crate::data::{batch_indices, images, training_digits};
use crate::fit::{fit, FitReport, RunFiles};
use crate::params::{normal, Params};

/// The latent mean and log-variance of every row of `d`, in batches, without gradients.
pub fn encode_all(
    b: &Candle,
    vae: &AutoencoderKL<Candle>,
    d: &Digits,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (mut means, mut logvars) = (vec![], vec![]);
    for start in (0..d.len()).step_by(256) {
        let end = (start + 256).min(d.len());
        let x = b.tensor(
            &[end - start, 1, SIDE, SIDE],
            &d.images[start * SIDE * SIDE..end * SIDE * SIDE],
        )?;
        let (m, lv) = vae.encode(b, &x)?;
        means.extend(values(&m.detach())?);
        logvars.extend(values(&lv.detach())?);
    }
    Ok((means, logvars))
}

pub fn train(cfg: &TrainConfig, out: &Path, resume: bool) -> Result<FitReport> {
    let model = StableDiffusionConfig::from_file(&cfg.model_config)?;
    let digits = training_digits(cfg)?;
    let b = Candle::default();
    let mut params = Params::new(cfg.seed);
    let vae = AutoencoderKL::new(&b, &mut params, "", &model.vae, VaeParts::Both)?;
    eprintln!(
        "autoencoder: {} parameters, {} training digits",
        params.count(),
        digits.len()
    );
    let h = &cfg.autoencoder;
    let n = h.batch_size;
    let files = RunFiles::new(out, "autoencoder");
    let (report, ema) = fit(
        "autoencoder",
        &params,
        h,
        cfg.seed,
        &files,
        resume,
        |_, rng| {
            let idx = batch_indices(rng, digits.len(), n);
            let x = b.tensor(&[n, 1, SIDE, SIDE], &images(&digits, &idx, 0, rng))?;
            let (mean, logvar) = vae.encode(&b, &x)?;
            let noise: Vec<f32> = (0..mean.elem_count()).map(|_| normal(rng)).collect();
            let run = || -> candle_core::Result<Tensor> {
                let logvar = logvar.clamp(-30f32, 20f32)?;
                let eps = Tensor::from_slice(&noise, mean.dims(), mean.device())?;
                let z = (&mean + ((&logvar * 0.5)?.exp()? * eps)?)?;
                let recon = vae.decode(&b, &z).map_err(candle_core::Error::wrap)?;
                let l1 = (recon - &x)?.abs()?.mean_all()?;
                let kl = (((mean.sqr()? + logvar.exp()?)? - 1.0)? - &logvar)?.mean_all()?;
                l1 + (kl * (0.5 * h.kl_weight))?
            };
            run().map_err(ce)
        },
    )?;

    // Ship the EMA weights: load them into the model, measure the latent scale, save.
    for (s, (_, p)) in ema.shadow.iter().zip(&params.entries) {
        p.set(s).map_err(ce)?;
    }
    let (means, _) = encode_all(&b, &vae, &digits)?;
    let mu = means.iter().map(|&v| v as f64).sum::<f64>() / means.len() as f64;
    let var = means.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / means.len() as f64;
    let scaling = 1.0 / var.sqrt();
    eprintln!(
        "autoencoder: latent std {:.4} -> scaling_factor {scaling:.5}",
        var.sqrt()
    );
    let meta = HashMap::from([("scaling_factor".to_string(), format!("{scaling:.6}"))]);
    nn::sd::weights::save_atomic(&out.join("vae.safetensors"), &params.snapshot()?, meta)?;

    // A picture to look at: held-out digits (odd rows) above their reconstructions.
    let (_, held_out) = Digits::load(&cfg.data)?.split()?;
    let shown = held_out.slice(0..16);
    let x = b.tensor(&[16, 1, SIDE, SIDE], &shown.images)?;
    let (m, _) = vae.encode(&b, &x)?;
    let recon = values(&vae.decode(&b, &m)?)?;
    let l1 = recon
        .iter()
        .zip(&shown.images)
        .map(|(a, c)| (a - c).abs() as f64)
        .sum::<f64>()
        / recon.len() as f64;
    eprintln!("autoencoder: held-out L1 reconstruction error {l1:.4} (of 16 digits)");
    let mut grid = shown.images.clone();
    grid.extend(recon);
    nn::sd::grid::write_grid(
        &out.join("samples").join("vae_reconstruction.png"),
        &grid,
        SIDE,
        16,
    )?;
    let _ = b.name();
    Ok(report)
}
