//! Text-to-image on secret shares in one process (PIDM's setting, the in-process form): the
//! model owner deals the three models' weights and the client deals the prompts' one-hot token
//! rows and x_T (both in memory here); three parties in threads, each holding only its shares,
//! run the text encoder, every guided DDIM step and the VAE decoder over an in-memory mesh
//! ([`mpc::run_local`]); the client reconstructs the image from the three output shares.
//!
//! The CLI's `generate --mode mpc` (local form and deployments) runs the same
//! [`TextToImage::sample_from`] at each party, with the shares sent over the role links.

use std::sync::Mutex;
use std::time::Instant;

use mpc::{deal_values, reconstruct, run_local, FixedConfig, MpcError, OutputShare, TruncMethod};
use nn::sd::model_files::ModelFiles;
use nn::{Methods, Mpc, Plain, PlainTensor};
use rand08::SeedableRng;
use ring::FixedPoint;

use crate::text_to_image::token_rows;
use crate::{sdu_targets, Error, Result, SampleOptions, Sdu, SduTargets, TextToImage};

/// The MPC settings of a run.
#[derive(Clone, Copy, Debug)]
pub struct ShareSettings {
    pub methods: Methods,
    pub trunc: TruncMethod,
    pub frac_bits: u32,
    /// Seeds the dealer and the parties' keys (reproducible runs, tests); `None`: fresh
    /// randomness from the OS.
    pub seed: Option<u64>,
}

/// The opened images and what producing them cost.
#[derive(Clone, Debug)]
pub struct PrivateSample {
    /// (N, C, H, W) values, as opened by the client.
    pub images: Vec<f64>,
    pub shape: [usize; 4],
    /// From the dealt shares to the opened image (setup excluded).
    pub seconds: f64,
    /// Sent between the three parties, all together.
    pub bytes: u64,
    /// Most rounds metered by a party.
    pub rounds: u64,
}

/// Samples `prompts` from `noise` (N * C * h * w values of x_T) on shares; `on_step(i)` after
/// step i (0-based), called by party 0. With `sdu`, the client first runs the unconditional
/// trajectory in the clear (it holds the weights here) and deals its targets with x_T.
pub fn sample_on_shares_local(
    files: &ModelFiles,
    prompts: &[String],
    noise: &[f32],
    opts: SampleOptions,
    settings: ShareSettings,
    sdu: Option<Sdu>,
    on_step: impl Fn(usize) + Sync,
) -> Result<PrivateSample> {
    let c = &files.config;
    let n = prompts.len();
    let (lc, ls) = (c.vae.latent_channels, c.latent_size());
    if n == 0 || noise.len() != n * lc * ls * ls {
        return Err(Error::Inputs(format!(
            "{} noise values for {n} prompts: x_T is {n}x{lc}x{ls}x{ls}",
            noise.len()
        )));
    }
    let fp = FixedPoint::new(settings.frac_bits);
    let mut dealer = match settings.seed {
        Some(s) => rand08::rngs::StdRng::seed_from_u64(s),
        None => rand08::rngs::StdRng::from_entropy(),
    };
    // The model owner's shares, then the client's.
    let weights = nn::sd::deal_model_files(files, settings.frac_bits, &mut dealer)?;
    let (token_shape, rows) = token_rows(&files.tokenizer, c, prompts)?;
    let mut share = |shape: &[usize], values: &[f32]| {
        deal_values(&fp, shape, values, &mut dealer).map_err(|e| Error::Inputs(e.to_string()))
    };
    let tokens = share(&token_shape, &rows)?;
    let x_t = share(&[n, lc, ls, ls], noise)?;
    // Per step, the three parties' shares of its target; then per party, its targets.
    let mut targets: Vec<Vec<_>> = vec![Vec::new(); 3];
    if let Some(sdu) = sdu {
        let plain = TextToImage::new(&Plain, files, |_, s, d| PlainTensor::new(s, d))?;
        let x_t = PlainTensor::new(&[n, lc, ls, ls], noise.to_vec())?;
        for step in sdu_targets(&plain, &x_t, opts.steps, sdu, |_, _| {})? {
            for (mine, s) in targets.iter_mut().zip(share(step.shape(), step.data())?) {
                mine.push(s);
            }
        }
    }
    let scaling = files.scaling_factor()?;
    let per_party: Vec<_> = weights
        .into_iter()
        .zip(tokens.into_iter().zip(x_t).zip(targets))
        .map(Some)
        .collect();
    let per_party = Mutex::new(per_party);

    let started = Instant::now();
    let outs = run_local(
        FixedConfig::new(settings.frac_bits, settings.trunc),
        settings.seed,
        |party| {
            let id = party.id();
            let taken = per_party.lock().map(|mut v| v[id].take());
            let Ok(Some((mut mine, ((tokens, x_t), targets)))) = taken else {
                return Err(MpcError::invalid(
                    "text_to_image",
                    "a party's shares are missing",
                ));
            };
            let err = |e: Error| MpcError::invalid("text_to_image", e.to_string());
            let b = Mpc::new(party, settings.methods);
            let pipe = TextToImage::from_sources(
                &b,
                c.clone(),
                files.tokenizer.clone(),
                scaling,
                [&mut mine.text_encoder, &mut mine.unet, &mut mine.vae],
            )
            .map_err(err)?;
            let sdu = sdu.map(|s| SduTargets {
                eta: s.eta,
                eps: targets,
            });
            let before = party.meter().total();
            let x0 = pipe
                .sample_from(&b, &tokens, x_t, opts, sdu.as_ref(), |i| {
                    if id == 0 {
                        on_step(i)
                    }
                })
                .map_err(err)?;
            let after = party.meter().total();
            Ok((
                OutputShare::of(&x0),
                after.bytes - before.bytes,
                after.rounds - before.rounds,
            ))
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let bytes = outs.iter().map(|o| o.1).sum();
    let rounds = outs.iter().map(|o| o.2).max().unwrap_or(0);
    let parts: Vec<OutputShare> = outs.into_iter().map(|o| o.0).collect();
    let images = fp.decode_slice(reconstruct(&parts)?.data());
    let shape = [n, c.vae.out_channels, c.image_size, c.image_size];
    Ok(PrivateSample {
        images,
        shape,
        seconds,
        bytes,
        rounds,
    })
}
