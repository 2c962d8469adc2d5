//! `secdiff audit he`: what a curious HE server learns. It runs real HE sessions of a model over
//! loopback with a server that records everything it receives, then reconstructs the client's
//! x_t (every step) and x_0 from each source the server holds, and scores the reconstructions
//! against the client's true trajectory with PSNR and SSIM:
//!
//! - features (all activations sent at the split point): the first one is always the stem
//!   convolution's output (a U-Net's first skip connection), inverted by least squares;
//! - deepest activation only (as if the skip connections were withheld): Gauss-Newton against the
//!   known weights, at a few steps (it is the slow one);
//! - plaintext part z of the split (zeros at the encrypted positions);
//! - predicted noise: x_T ~ eps at the first step, rolled forward with the received eps.
//!
//! Sources that depend on the split point are measured per split point (at the first threshold);
//! the plaintext part is measured per threshold (at the first split point).

use std::path::PathBuf;

use clap::Args;
use diffusion::{DdimConfig, Sampler, SeededNoise, Spacing};
use he::audit::{
    from_features, from_noise_rollout, from_plain_part, record_session, score, AuditSession,
    HeadInverter, Reconstruction, Scores,
};
use he::model::{split_name, LoadedModel};
use he::Preset;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::he_util::{write_atomic, CliResult};

#[derive(Args, Debug)]
pub struct AuditHeArgs {
    #[arg(long, default_value = "cipherdm-mnist")]
    model: String,
    /// Class labels of the audited samples, comma-separated.
    #[arg(long, default_value = "0,1")]
    labels: String,
    /// DDIM steps of each audited session.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Split points to audit, comma-separated (init_conv, downs_0, ...).
    #[arg(long, default_value = "init_conv,downs_0,downs_2,downs_4")]
    splits: String,
    /// Split thresholds to audit, comma-separated.
    #[arg(long, default_value = "0.01,0.05,0.2")]
    thresholds: String,
    /// CKKS preset of the sessions.
    #[arg(long, default_value = "hediff")]
    preset: String,
    /// Gauss-Newton iterations of the deepest-activation inversion.
    #[arg(long, default_value_t = 8)]
    deep_iters: usize,
    /// Steps at which the deepest activation is inverted (spread over the run, always the last).
    #[arg(long, default_value_t = 3)]
    deep_steps: usize,
    /// Seed of x_T.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the records as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a PNG strip: per sample, x_t (middle step) truth | from features | from z, then x_0
    /// truth | from features | from z | from the noise rollout.
    #[arg(long)]
    png: Option<PathBuf>,
}

/// One row of the audit.
#[derive(Debug, Serialize)]
struct Record {
    source: &'static str,
    split: Option<String>,
    threshold: Option<f64>,
    /// Mean fraction of the latent the server received in the clear.
    plain_fraction: f64,
    /// Steps at which x_t was reconstructed.
    steps_evaluated: usize,
    #[serde(flatten)]
    scores: Scores,
}

fn parse_list<T: std::str::FromStr>(flag: &str, text: &str) -> CliResult<Vec<T>> {
    text.split(',')
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| format!("--{flag}: cannot parse `{}`", s.trim()).into())
        })
        .collect()
}

pub fn run(args: AuditHeArgs) -> CliResult {
    let model = LoadedModel::load(&args.model)?;
    let labels: Vec<usize> = parse_list("labels", &args.labels)?;
    let thresholds: Vec<f64> = parse_list("thresholds", &args.thresholds)?;
    let splits = args
        .splits
        .split(',')
        .map(|s| model.split_point(s.trim()))
        .collect::<he::Result<Vec<_>>>()?;
    if labels.is_empty() || thresholds.is_empty() || splits.is_empty() {
        return Err("--labels, --splits and --thresholds need at least one entry".into());
    }
    if let Some(t) = thresholds.iter().find(|t| !(0.0..=1.0).contains(*t)) {
        return Err(format!("--thresholds: {t} is not a fraction in [0, 1]").into());
    }
    for path in [&args.json, &args.png].into_iter().flatten() {
        if path.is_dir() {
            return Err(format!("{}: is a directory", path.display()).into());
        }
    }
    let preset = Preset::parse(&args.preset)?;
    let sampler = Sampler::Ddim(DdimConfig {
        steps: args.steps,
        eta: 0.0,
        spacing: Spacing::Uniform,
        clip_x0: false,
    });
    let plan = he::sampler::plan(&sampler, &model.schedule)?;
    let [c, h, w] = model.dir.image_shape();
    let n = labels.len();
    let shape = [n, c, h, w];
    let x_start = SeededNoise::new(args.seed).normal(n * c * h * w);
    let inverter = HeadInverter::new(model.clone(), &labels)?;
    let last = plan.len() - 1;
    let deep_at: Vec<usize> = {
        let k = args.deep_steps.clamp(1, plan.len());
        let mut v: Vec<usize> = (0..k).map(|i| i * last / (k - 1).max(1)).collect();
        v.push(last);
        v.sort_unstable();
        v.dedup();
        v
    };

    let sessions = splits.len() + thresholds.len() - 1;
    let deep_work = splits.iter().filter(|s| s.down_blocks > 0).count();
    let bar = ProgressBar::new((sessions + deep_work) as u64).with_style(
        ProgressStyle::with_template("{spinner} audit he [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .expect("valid template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut records = Vec::new();
    let mut strip: Option<(AuditSession, Vec<Reconstruction>)> = None;
    let run_session = |split, threshold| {
        record_session(&model, split, threshold, preset, &x_start, &labels, &plan)
    };

    for (i, &split) in splits.iter().enumerate() {
        bar.set_message(format!("session at split {}", split_name(split)));
        let run = run_session(split, thresholds[0])?;
        bar.inc(1);
        let plain_fraction = run.recording.plain_fraction();
        let mut row = |source, threshold: Option<f64>, rec: &Reconstruction| -> CliResult {
            records.push(Record {
                source,
                split: Some(split_name(split)),
                threshold,
                plain_fraction,
                steps_evaluated: rec.x_t.iter().filter(|x| x.is_some()).count(),
                scores: score(&run.trajectory, &shape, rec)?,
            });
            Ok(())
        };
        let features = from_features(&run.recording, None, &mut |_, f| inverter.from_stem(f))?;
        row("features (all sent)", None, &features)?;
        if split.down_blocks > 0 {
            bar.set_message(format!(
                "inverting the deepest activation at {}",
                split_name(split)
            ));
            let deep = from_features(&run.recording, Some(&deep_at), &mut |step, f| {
                let t = run.recording.steps[step].t;
                inverter.from_deepest(split, t, f, args.deep_iters)
            })?;
            row("deepest activation only", None, &deep)?;
            bar.inc(1);
        }
        if i == 0 {
            let plain = from_plain_part(&run.recording)?;
            row("plaintext part z", Some(thresholds[0]), &plain)?;
            let noise = from_noise_rollout(&run.recording)?;
            row("predicted noise (rollout)", None, &noise)?;
            strip = Some((run, vec![features, plain, noise]));
        }
    }
    for &threshold in &thresholds[1..] {
        bar.set_message(format!("session at threshold {threshold}"));
        let run = run_session(splits[0], threshold)?;
        bar.inc(1);
        let plain = from_plain_part(&run.recording)?;
        records.push(Record {
            source: "plaintext part z",
            split: Some(split_name(splits[0])),
            threshold: Some(threshold),
            plain_fraction: run.recording.plain_fraction(),
            steps_evaluated: plan.len(),
            scores: score(&run.trajectory, &shape, &plain)?,
        });
    }
    bar.finish_and_clear();

    println!(
        "HE leakage audit: model {}, {} sample(s), DDIM-{} unclipped, preset {preset}; PSNR in dB \
         (capped at 100), x_t averaged over the reconstructed steps",
        model.name(),
        n,
        plan.len()
    );
    println!(
        "{:<27} {:<10} {:>9} {:>10} {:>6} {:>9} {:>8} {:>9} {:>8}",
        "source",
        "split",
        "threshold",
        "plain frac",
        "steps",
        "PSNR x_t",
        "SSIM x_t",
        "PSNR x_0",
        "SSIM x_0"
    );
    for r in &records {
        println!(
            "{:<27} {:<10} {:>9} {:>10.3} {:>6} {:>9.2} {:>8.4} {:>9.2} {:>8.4}",
            r.source,
            r.split.as_deref().unwrap_or("-"),
            r.threshold.map_or("-".into(), |t| t.to_string()),
            r.plain_fraction,
            r.steps_evaluated,
            r.scores.psnr_x_t,
            r.scores.ssim_x_t,
            r.scores.psnr_x_0,
            r.scores.ssim_x_0
        );
    }
    if let Some(path) = &args.json {
        write_atomic(path, &serde_json::to_vec_pretty(&records)?)?;
        println!("wrote {}", path.display());
    }
    if let (Some(path), Some((run, recs))) = (&args.png, &strip) {
        write_atomic(path, &strip_png(run, recs, &shape)?)?;
        println!(
            "wrote {} (per sample: x_t at step {} truth | features | z, x_0 truth | features | z \
             | noise rollout)",
            path.display(),
            plan.len() / 2
        );
    }
    Ok(())
}

/// Tiles (H x W, grey) per sample: x_t at the middle step (truth, from features, from z) and x_0
/// (truth, from features, from z, from the noise rollout). Each group is scaled by its truth's
/// range, so a faithful reconstruction looks the same as the truth.
fn strip_png(
    run: &AuditSession,
    recs: &[Reconstruction],
    shape: &[usize; 4],
) -> CliResult<Vec<u8>> {
    const GAP: usize = 2;
    let [n, c, h, w] = *shape;
    if c != 1 {
        return Err("--png draws single-channel models only".into());
    }
    let mid = run.trajectory.len().saturating_sub(1) / 2;
    let pick = |x: &Option<Vec<f32>>| x.clone().unwrap_or_else(|| vec![0.0; n * h * w]);
    let x_t = [
        run.trajectory[mid].clone(),
        pick(&recs[0].x_t[mid]),
        pick(&recs[1].x_t[mid]),
    ];
    let x_0 = [
        run.trajectory.last().expect("non-empty").clone(),
        recs[0].x_0.clone(),
        recs[1].x_0.clone(),
        recs[2].x_0.clone(),
    ];
    let cols = x_t.len() + x_0.len();
    let (gw, gh) = (cols * (w + GAP) + GAP, n * (h + GAP) + GAP);
    let mut pixels = vec![255u8; gw * gh];
    for s in 0..n {
        let tiles = x_t
            .iter()
            .map(|t| (t, &x_t[0]))
            .chain(x_0.iter().map(|t| (t, &x_0[0])));
        for (col, (tile, truth)) in tiles.enumerate() {
            let truth = &truth[s * h * w..(s + 1) * h * w];
            let (lo, hi) = truth
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, u), &v| {
                    (l.min(v), u.max(v))
                });
            let range = (hi - lo).max(1e-6);
            for y in 0..h {
                for x in 0..w {
                    let v = (tile[s * h * w + y * w + x] - lo) / range;
                    let (py, px) = (GAP + s * (h + GAP) + y, GAP + col * (w + GAP) + x);
                    pixels[py * gw + px] = (v.clamp(0.0, 1.0) * 255.0) as u8;
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, gw as u32, gh as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| format!("PNG: {e}"))?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| format!("PNG: {e}"))?;
    writer.finish().map_err(|e| format!("PNG: {e}"))?;
    Ok(out)
}
