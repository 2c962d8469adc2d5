//! `secdiff bench plain`: one U-Net forward (batch 1, median of many runs) and one DDIM-50
//! sample on the plaintext backend, optionally side by side with JAX's jitted forward of the same
//! model (scripts/bench/jax_unet.py), printing the ratio measured in the same run.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use clap::Args;
use diffusion::{DdimConfig, Sampler, SeededNoise};
use nn::unet::one_hot;
use nn::{Backend, Plain, PlainTensor};

use crate::cli_error::{CliError, CliResult};

#[derive(Args, Debug)]
pub struct BenchPlainArgs {
    /// A model name under models/ (or $SECDIFF_MODELS), or a model directory.
    #[arg(long, default_value = "cipherdm-mnist")]
    pub model: String,
    /// Timed U-Net forwards (after 20 warm-up runs).
    #[arg(long, default_value_t = 300)]
    pub runs: usize,
    /// Timed DDIM-50 samples.
    #[arg(long, default_value_t = 5)]
    pub sample_runs: usize,
    /// Also time JAX's jitted forward of cipherdm-mnist (scripts/bench/jax_unet.py) in between
    /// two rounds of ours, and print the ratio.
    #[arg(long)]
    pub vs_jax: bool,
    /// Python with jax 0.4.34 and flax 0.9.0 (default: $SECDIFF_JAX_PYTHON, else
    /// /tmp/spu-venv/bin/python, else python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn time_forwards(runs: usize, mut forward: impl FnMut() -> CliResult<()>) -> CliResult<Vec<f64>> {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            forward()?;
            Ok(start.elapsed().as_secs_f64())
        })
        .collect()
}

fn jax_python(args: &BenchPlainArgs) -> PathBuf {
    if let Some(p) = &args.python {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("SECDIFF_JAX_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from("/tmp/spu-venv/bin/python");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Runs the JAX script and returns its median forward seconds.
fn jax_forward_seconds(args: &BenchPlainArgs, model_dir: &std::path::Path) -> CliResult<f64> {
    let script = model_dir.join("../../scripts/bench/jax_unet.py");
    if !script.is_file() {
        return Err(CliError::Other(format!(
            "JAX script not found at {}",
            script.display()
        )));
    }
    let python = jax_python(args);
    let output = Command::new(&python)
        .arg(&script)
        .arg("--runs")
        .arg(args.runs.to_string())
        .output()
        .map_err(|e| CliError::Other(format!("cannot run {}: {e}", python.display())))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let parsed: serde_json::Value = serde_json::from_str(line).map_err(|_| {
        CliError::Other(format!(
            "the JAX script failed (exit {:?}): {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        ))
    })?;
    if !output.status.success() {
        return Err(CliError::Other(format!(
            "the JAX script's output disagrees with eps.out: {line}"
        )));
    }
    eprintln!("jax: {line}");
    parsed["forward_seconds_median"]
        .as_f64()
        .ok_or_else(|| CliError::Other(format!("unexpected JAX output: {line}")))
}

pub fn run(args: BenchPlainArgs) -> CliResult<()> {
    if args.runs == 0 || args.sample_runs == 0 {
        return Err(CliError::Usage(
            "--runs and --sample-runs must be at least 1".into(),
        ));
    }
    let model = diffusion::resolve_model(&args.model)?;
    if args.vs_jax && model.name != "cipherdm-mnist" {
        return Err(CliError::Usage(
            "--vs-jax compares cipherdm-mnist only".into(),
        ));
    }
    let unet = model.load_plain_unet()?;
    let schedule = model.schedule()?;
    let b = Plain;
    let [c, h, w] = model.image_shape();
    let mut rng = SeededNoise::new(1);
    let x = PlainTensor::new(&[1, c, h, w], rng.normal(c * h * w))?;
    let y = match model.config.unet.num_classes {
        Some(k) => Some(b.public(&[1, k], &one_hot(&[k - 1], k).expect("label < k"))?),
        None => None,
    };
    let mut forward = || -> CliResult<()> {
        std::hint::black_box(unet.forward(&b, &x, &[500], y.as_ref())?);
        Ok(())
    };
    time_forwards(20, &mut forward)?;
    let mut ours = time_forwards(args.runs, &mut forward)?;
    let jax = if args.vs_jax {
        let jax = jax_forward_seconds(&args, &model.dir)?;
        // A second round of ours after JAX's, so that a change in machine load during the run
        // affects both sides.
        ours.extend(time_forwards(args.runs, &mut forward)?);
        Some(jax)
    } else {
        None
    };
    let forward_median = median(ours.clone());
    let forward_min = ours.iter().copied().fold(f64::INFINITY, f64::min);

    let sampler = Sampler::Ddim(DdimConfig::default());
    let mut samples = Vec::new();
    for _ in 0..args.sample_runs {
        let x_t = PlainTensor::new(&[1, c, h, w], rng.normal(c * h * w))?;
        let start = Instant::now();
        sampler.sample(
            &b,
            &schedule,
            x_t,
            |x, t| unet.forward(&b, x, &[t], y.as_ref()),
            &mut SeededNoise::new(2),
            |_| {},
        )?;
        samples.push(start.elapsed().as_secs_f64());
    }

    println!(
        "model: {} (plain backend, batch 1, {} cores available)",
        model.name,
        cores()
    );
    println!(
        "U-Net forward: median {:.3} ms, min {:.3} ms over {} runs",
        forward_median * 1e3,
        forward_min * 1e3,
        ours.len()
    );
    println!(
        "DDIM-50 sample: median {:.1} ms over {} runs",
        median(samples) * 1e3,
        args.sample_runs
    );
    if let Some(jax) = jax {
        println!(
            "JAX jitted forward: median {:.3} ms -> secdiff plain is {:.2}x faster (same run)",
            jax * 1e3,
            jax / forward_median
        );
    }
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
