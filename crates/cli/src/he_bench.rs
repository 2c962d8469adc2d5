//! `secdiff bench he`: one denoising step of the latent in HE-Diffusion's three forms (every
//! element in its own ciphertext, the dense latent packed, the sparse min-distortion form), timed
//! side by side for the cipherdm-mnist latent (1x28x28) and an SD-sized latent (4x64x64), with the
//! speed-ups. Values and noise predictions are synthetic standard-normal draws (the step's cost
//! does not depend on them; the split's encrypted fraction does, and Gaussian is what x_T is).

use std::path::PathBuf;

use clap::Args;
use he::bench::{bench_latent, BenchRecord};
use he::split::DEFAULT_THRESHOLD;
use he::step::StepCoefficients;
use he::{CkksContext, ClientKeys, Preset};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::he_util::{write_atomic, CliResult};

#[derive(Args, Debug)]
pub struct BenchHeArgs {
    /// Write one JSON record per latent to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// CKKS parameter preset (hediff: HE-Diffusion's N=8192, [31,26x6,31], 2^26; precise).
    #[arg(long, default_value = "hediff")]
    preset: String,
    /// Fraction of total distortion the plaintext part may carry.
    #[arg(long, default_value_t = DEFAULT_THRESHOLD)]
    threshold: f64,
    /// Elements of the SD-sized latent to run in the every-element form (the time is scaled up to
    /// all 16384); 0 runs all of them (minutes).
    #[arg(long, default_value_t = 1024)]
    every_element_sample: usize,
    /// Seed of the synthetic values.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: BenchHeArgs) -> CliResult {
    let preset = Preset::parse(&args.preset)?;
    let ctx = CkksContext::from_preset(preset)?;
    let keys = ClientKeys::generate(&ctx)?;
    // The DDIM-50 step from t = 981 to t = 961 on the 1000-step linear schedule (cipherdm-mnist's
    // and SD's).
    let schedule = diffusion::BetaSchedule::Linear {
        timesteps: 1000,
        beta_start: 1e-4,
        beta_end: 0.02,
    }
    .build()?;
    let abar = |t: usize| schedule.alpha_bars[t] as f64;
    let coeff = StepCoefficients::ddim(abar(981), abar(961));
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut gaussian =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.sample(StandardNormal)).collect() };

    let latents: [(&str, [usize; 4], Option<usize>); 2] = [
        ("cipherdm-mnist 1x28x28", [1, 1, 28, 28], None),
        (
            "sd 4x64x64",
            [1, 4, 64, 64],
            (args.every_element_sample > 0).then_some(args.every_element_sample),
        ),
    ];
    let bar = ProgressBar::new(latents.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} bench he [{bar:20}] {pos}/{len} {msg} ({elapsed})")
            .expect("valid template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut records: Vec<BenchRecord> = Vec::new();
    for (name, shape, sample) in latents {
        bar.set_message(name);
        let n = shape.iter().product();
        let x = gaussian(n);
        let eps = gaussian(n);
        records.push(bench_latent(
            &keys,
            name,
            &shape,
            &x,
            &eps,
            coeff,
            args.threshold,
            sample,
        )?);
        bar.inc(1);
    }
    bar.finish_and_clear();

    println!(
        "HE-Diffusion step, preset {preset} (N={}, slots {}), threshold {}: client split+encrypt, \
         server update, client decrypt+merge; U-Net and network excluded",
        ctx.params().poly_degree,
        ctx.slots(),
        args.threshold
    );
    println!(
        "{:<24} {:>6} {:>14} {:>11} {:>11} {:>9} {:>12} {:>12} {:>10}",
        "latent",
        "clock",
        "every-elem s",
        "packed s",
        "sparse s",
        "enc frac",
        "sparse/every",
        "sparse/pack",
        "max err"
    );
    for r in &records {
        let rows = [
            (
                "wall",
                r.seconds_every_element,
                r.seconds_packed,
                r.seconds_sparse,
            ),
            (
                "cpu",
                r.cpu_seconds_every_element,
                r.cpu_seconds_packed,
                r.cpu_seconds_sparse,
            ),
        ];
        for (clock, every, packed, sparse) in rows {
            println!(
                "{:<24} {:>6} {:>13.3}{} {:>11.4} {:>11.4} {:>9.3} {:>11.0}x {:>11.2}x {:>10.1e}",
                r.latent,
                clock,
                every,
                if r.every_element_extrapolated {
                    "*"
                } else {
                    " "
                },
                packed,
                sparse,
                r.encrypted_fraction,
                every / sparse,
                packed / sparse,
                r.max_error_every_element
                    .max(r.max_error_packed)
                    .max(r.max_error_sparse),
            );
        }
    }
    println!(
        "(wall: elapsed time; cpu: the measuring thread's CPU time, the stable ratio when other \
         jobs share the cores)"
    );
    for r in records.iter().filter(|r| r.every_element_extrapolated) {
        println!(
            "* {}: every-element form measured on {} of {} elements and scaled linearly (one \
             ciphertext per element, so its cost is per element); --every-element-sample 0 runs all",
            r.latent,
            r.every_element_measured,
            r.shape.iter().product::<usize>()
        );
    }
    println!("ciphertexts per step / client->server latent bytes:");
    for r in &records {
        println!(
            "  {:<24} every-element {} / {}, packed {} / {}, sparse {} / {}",
            r.latent,
            r.ciphertexts_every_element,
            r.bytes_every_element,
            r.ciphertexts_packed,
            r.bytes_packed,
            r.ciphertexts_sparse,
            r.bytes_sparse
        );
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&records)?;
        write_atomic(path, &json)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
