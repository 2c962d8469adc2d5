//! mnist-sd's ten digits sampled in the clear and on secret shares (three parties in threads:
//! text encoder, guided DDIM U-Net and VAE decoder under MPC, weights, prompts and x_T secret),
//! written as one PNG: the plaintext row above the MPC row, same prompts and x_T.
//!
//!   cargo run --release -p diffusion --example mnist_sd_on_shares -- [OUT.png] [STEPS]
//!
//! Defaults: target/mnist_sd_on_shares.png, 50 steps (about two minutes on two cores).

mod common;

use std::error::Error;
use std::time::Instant;

use diffusion::{sample_on_shares_local, SampleOptions, ShareSettings, TextToImage};
use mpc::TruncMethod;
use nn::{Methods, Plain, PlainTensor};

fn main() -> Result<(), Box<dyn Error>> {
    let (out, steps) = common::out_and_steps("target/mnist_sd_on_shares.png", 50)?;
    let common::Digits {
        files,
        prompts,
        noise,
    } = common::digits()?;
    let c = files.config.clone();
    let n = prompts.len();
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
