//! What the mnist-sd examples share: their arguments and the ten digits' prompts and x_T.

use std::error::Error;
use std::path::PathBuf;

use nn::sd::model_files::ModelFiles;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// The repository root (models/ and target/ are under it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `[OUT.png] [STEPS]` from the command line, with the example's defaults.
pub fn out_and_steps(default_out: &str, default_steps: usize) -> Result<(PathBuf, usize), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(default_out));
    let steps = match args.get(1) {
        Some(s) => s
            .parse()
            .map_err(|_| format!("STEPS {s:?} is not a count"))?,
        None => default_steps,
    };
    Ok((out, steps))
}

/// The shipped mnist-sd, the prompts "a handwritten 0" .. "a handwritten 9", and their x_T.
pub struct Digits {
    pub files: ModelFiles,
    pub prompts: Vec<String>,
    /// Standard normal, seed 0.
    pub noise: Vec<f32>,
}

pub fn digits() -> Result<Digits, Box<dyn Error>> {
    let files = ModelFiles::load(&root().join("models/mnist-sd"))?;
    let c = &files.config;
    let prompts: Vec<String> = (0..10).map(|d| format!("a handwritten {d}")).collect();
    let (lc, ls) = (c.vae.latent_channels, c.latent_size());
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let noise: Vec<f32> = (0..prompts.len() * lc * ls * ls)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    Ok(Digits {
        files,
        prompts,
        noise,
    })
}
