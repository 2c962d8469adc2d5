//! mnist-sd's ten digits sampled in the clear and on secret shares (three parties in threads:
//! text encoder, guided DDIM U-Net and VAE decoder under MPC, weights, prompts and x_T secret),
//! written as one PNG: the plaintext row above the MPC row, same prompts and x_T.
//!
//!   cargo run --release -p diffusion --example mnist_sd_on_shares -- [OUT.png] [STEPS]
//!
//! Defaults: target/mnist_sd_on_shares.png, 50 steps (about two minutes on two cores).

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use diffusion::{sample_on_shares_local, SampleOptions, ShareSettings, TextToImage};
use mpc::TruncMethod;
use nn::sd::model_files::ModelFiles;
use nn::{Methods, Plain, PlainTensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = args
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/mnist_sd_on_shares.png"));
    let steps: usize = match args.get(1) {
        Some(s) => s
            .parse()
            .map_err(|_| format!("STEPS {s:?} is not a count"))?,
        None => 50,
    };
    let files = ModelFiles::load(&root.join("models/mnist-sd"))?;
    let c = files.config.clone();
    let prompts: Vec<String> = (0..10).map(|d| format!("a handwritten {d}")).collect();
    let n = prompts.len();
    let (lc, ls) = (c.vae.latent_channels, c.latent_size());
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let noise: Vec<f32> = (0..n * lc * ls * ls)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let opts = SampleOptions {
        steps,
        guidance: 7.5,
    };

    let started = Instant::now();
    let plain = TextToImage::new(&Plain, &files, |_, s, d| PlainTensor::new(s, d))?;
    let want = plain.sample(&Plain, &prompts, &noise, opts, |_| {})?;
    eprintln!("plaintext: {:.1} s", started.elapsed().as_secs_f64());

    let settings = ShareSettings {
        methods: Methods::for_model("mnist-sd"),
        trunc: TruncMethod::Robust,
        frac_bits: 18,
        seed: None,
    };
    let run = sample_on_shares_local(&files, &prompts, &noise, opts, settings, None, |i| {
        eprint!("\rMPC step {}/{steps}", i + 1)
    })?;
    let got = run.images;
    let diff = got
        .iter()
        .zip(want.data())
        .map(|(g, w)| (g - *w as f64).abs())
        .fold(0.0, f64::max);
    eprintln!(
        "\rMPC: {n} images, {steps} guided steps, {:.1} s, {:.2} GB between the parties; max \
         abs difference from plaintext {diff:.2e} (pixels in [-1, 1])",
        run.seconds,
        run.bytes as f64 / 1e9
    );

    let clip = |v: f64| v.clamp(-1.0, 1.0) as f32;
    let mut grid: Vec<f32> = want.data().iter().map(|&v| clip(v as f64)).collect();
    grid.extend(got.iter().map(|&v| clip(v)));
    nn::sd::grid::write_grid(&out, &grid, c.image_size, n)?;
    eprintln!("wrote {} (top: plaintext, bottom: MPC)", out.display());
    Ok(())
}
