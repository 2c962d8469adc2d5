//! The training loop every part shares: learning-rate schedule, AdamW, EMA, a CSV loss log,
//! atomic checkpoints, resuming, and a progress bar.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use nn::Result;
use rand::SeedableRng;

use crate::backend::ce;
use crate::config::Hyper;
use crate::params::{load_checkpoint, save_checkpoint, AdamW, Ema, Params};

/// Where a part's run keeps its checkpoint and loss log.
pub struct RunFiles {
    pub checkpoint: PathBuf,
    pub log: PathBuf,
}

impl RunFiles {
    pub fn new(out: &Path, part: &str) -> Self {
        RunFiles {
            checkpoint: out
                .join("checkpoints")
                .join(format!("{part}.ckpt.safetensors")),
            log: out.join("train-logs").join(format!("{part}.csv")),
        }
    }
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct FitReport {
    pub steps: usize,
    /// Mean loss of the first and the last k steps of this invocation, k = min(100, steps / 4).
    pub first_loss: f64,
    pub final_loss: f64,
    pub wall_seconds: f64,
    pub cpu_seconds: Option<f64>,
}

/// CPU time (user + system) of this process so far, from /proc (Linux only).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Drops the rows of a loss log after `step` (a run that crashed after its last checkpoint logged
/// steps that the resumed run will redo).
fn truncate_log(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, line)| {
            *i == 0
                || line
                    .split(',')
                    .next()
                    .and_then(|s| s.parse::<usize>().ok())
                    .is_some_and(|s| s <= step)
        })
        .map(|(_, l)| l)
        .collect();
    nn::sd::weights::write_atomic(path, format!("{}\n", kept.join("\n")).as_bytes())
}

/// Trains `params` for `hyper.steps` steps of `loss(step, rng)`. Each step's randomness comes
/// from a generator seeded by (seed, step), so a resumed run continues exactly as an unbroken one.
pub fn fit(
    part: &str,
    params: &Params,
    hyper: &Hyper,
    seed: u64,
    files: &RunFiles,
    resume: bool,
    mut loss: impl FnMut(usize, &mut rand::rngs::StdRng) -> Result<Tensor>,
) -> Result<(FitReport, Ema)> {
    let mut opt = AdamW::new(params, hyper.weight_decay, hyper.grad_clip)?;
    let mut ema = Ema::new(params, hyper.ema_decay)?;
    for f in [&files.checkpoint, &files.log] {
        if let Some(dir) = f.parent() {
            std::fs::create_dir_all(dir).map_err(|e| nn::Error::File {
                path: dir.display().to_string(),
                detail: e.to_string(),
            })?;
        }
    }
    if resume && files.checkpoint.exists() {
        load_checkpoint(&files.checkpoint, params, &mut ema, &mut opt)?;
        eprintln!("{part}: resumed from step {}", opt.step);
    }
    let log_err = |e: std::io::Error| nn::Error::File {
        path: files.log.display().to_string(),
        detail: e.to_string(),
    };
    let fresh = opt.step == 0;
    if !fresh {
        truncate_log(&files.log, opt.step)?;
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(!fresh)
        .write(true)
        .truncate(fresh)
        .open(&files.log)
        .map_err(log_err)?;
    if fresh {
        writeln!(log, "step,loss,lr,grad_norm,wall_s").map_err(log_err)?;
    }

    let bar = ProgressBar::new(hyper.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} eta {eta} {msg}",
        )
        .expect("static template"),
    );
    bar.set_prefix(part.to_string());
    bar.set_position(opt.step as u64);

    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let mut losses = vec![];
    while opt.step < hyper.steps {
        let step = opt.step;
        let mut rng = rand::rngs::StdRng::seed_from_u64(
            seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let l = loss(step, &mut rng)?;
        let value = l.to_scalar::<f32>().map_err(ce)? as f64;
        if !value.is_finite() {
            return Err(nn::Error::Config(format!(
                "{part}: loss is {value} at step {step}: lower the learning rate"
            )));
        }
        let grads = l.backward().map_err(ce)?;
        let lr = hyper.lr_at(step);
        let norm = opt.update(params, &grads, lr)?;
        ema.update(params, opt.step)?;
        losses.push(value);
        writeln!(
            log,
            "{},{value:.6},{lr:.3e},{norm:.4},{:.1}",
            opt.step,
            start.elapsed().as_secs_f64()
        )
        .map_err(log_err)?;
        let recent = &losses[losses.len().saturating_sub(50)..];
        bar.set_message(format!(
            "loss {:.4}",
            recent.iter().sum::<f64>() / recent.len() as f64
        ));
        bar.inc(1);
        if opt.step % hyper.checkpoint_every == 0 || opt.step == hyper.steps {
            log.flush().map_err(log_err)?;
            save_checkpoint(&files.checkpoint, params, &ema, &opt)?;
        }
    }
    bar.finish();
    let mean = |s: &[f64]| {
        if s.is_empty() {
            f64::NAN
        } else {
            s.iter().sum::<f64>() / s.len() as f64
        }
    };
    let k = (losses.len() / 4).clamp(1, 100).min(losses.len());
    if losses.is_empty() {
        return Ok((
            FitReport {
                steps: opt.step,
                first_loss: f64::NAN,
                final_loss: f64::NAN,
                wall_seconds: 0.0,
                cpu_seconds: Some(0.0),
            },
            ema,
        ));
    }
    let report = FitReport {
        steps: opt.step,
        first_loss: mean(&losses[..k]),
        final_loss: mean(&losses[losses.len() - k..]),
        wall_seconds: start.elapsed().as_secs_f64(),
        cpu_seconds: cpu_seconds().zip(cpu0).map(|(a, b)| a - b),
    };
    Ok((report, ema))
}
