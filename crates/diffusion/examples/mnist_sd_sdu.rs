//! PIDM's score distillation on mnist-sd, on secret shares: the ten digits as plaintext DDIM-50
//! (the quality a full-step sampler reaches), then on shares with few steps, then on shares with
//! the same few steps and SDU (the client's unconditional trajectory in the clear, its targets
//! shared with x_T), written as one PNG with a row each, same prompts and x_T.
//!
//!   cargo run --release -p diffusion --example mnist_sd_sdu -- [OUT.png] [STEPS]
//!
//! Defaults: target/mnist_sd_sdu.png, 10 steps on shares (about a minute on two cores).

mod common;

use std::error::Error;
use std::time::Instant;

use diffusion::{sample_on_shares_local, SampleOptions, Sdu, ShareSettings, TextToImage};
use mpc::TruncMethod;
use nn::{Methods, Plain, PlainTensor};

fn main() -> Result<(), Box<dyn Error>> {
    let (out, steps) = common::out_and_steps("target/mnist_sd_sdu.png", 10)?;
    let common::Digits {
        files,
        prompts,
        noise,
    } = common::digits()?;
    let c = files.config.clone();
    let n = prompts.len();
    let opts = |steps| SampleOptions {
        steps,
        guidance: 7.5,
    };

    let plain = TextToImage::new(&Plain, &files, |_, s, d| PlainTensor::new(s, d))?;
    let full = plain.sample(&Plain, &prompts, &noise, opts(50), |_| {})?;
    let full: Vec<f64> = full.data().iter().map(|&v| v as f64).collect();
    let settings = ShareSettings {
        methods: Methods::for_model("mnist-sd"),
        trunc: TruncMethod::Robust,
        frac_bits: 18,
        seed: None,
    };
    let mut grid: Vec<f32> = full.iter().map(|&v| v.clamp(-1.0, 1.0) as f32).collect();
    for (label, sdu) in [("MPC", None), ("MPC + SDU", Some(Sdu::default()))] {
        let started = Instant::now();
        let run =
            sample_on_shares_local(&files, &prompts, &noise, opts(steps), settings, sdu, |i| {
                eprint!("\r{label} step {}/{steps}", i + 1)
            })?;
        // Mean absolute difference per pixel from the 50-step plaintext images.
        let gap = run
            .images
            .iter()
            .zip(&full)
            .map(|(g, w)| (g.clamp(-1.0, 1.0) - w.clamp(-1.0, 1.0)).abs())
            .sum::<f64>()
            / full.len() as f64;
        eprintln!(
            "\r{label}, {steps} steps: {:.1} s on shares ({:.1} s in all), {:.2} GB between the \
             parties; mean |difference| from plaintext DDIM-50: {gap:.3}",
            run.seconds,
            started.elapsed().as_secs_f64(),
            run.bytes as f64 / 1e9
        );
        grid.extend(run.images.iter().map(|&v| v.clamp(-1.0, 1.0) as f32));
    }
    nn::sd::grid::write_grid(&out, &grid, c.image_size, n)?;
    eprintln!(
        "wrote {} (rows: plaintext DDIM-50, MPC {steps} steps, MPC {steps} steps + SDU)",
        out.display()
    );
    Ok(())
}
