//! `secdiff eval`: how good a text-to-digit model is. Generates N digits over all prompt templates
//! and reports (a) how often the shipped MNIST classifier recognises the requested digit (our
//! analogue of a CLIP score) and (b) the FID between the classifier's penultimate features of the
//! samples and of the held-out real digits, next to `fid_floor`, the FID of one half of the
//! held-out digits against the other. Writes a PNG grid per digit and, on request, JSON.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use diffusion::{sdu_targets, SampleOptions, Sdu, SduTargets, TextToImage};
use indicatif::{ProgressBar, ProgressStyle};
use nn::approx::{Approx, ApproxTensor};
use nn::sd::mnist::{Digits, SIDE};
use nn::sd::model_files::ModelFiles;
use nn::sd::tokenizer::{prompt_for, TEMPLATES};
use nn::sd::weights::WeightsFile;
use nn::sd::MnistClassifier;
use nn::{Backend, Plain, PlainTensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use crate::fid::frechet_distance;

#[derive(Clone, Copy, Debug, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalMode {
    /// f32 plaintext.
    Plain,
    /// Plaintext that reproduces the secure approximations (the MPC engineers' Approx backend).
    Approx,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A model directory, or the name of one under models/ (e.g. mnist-sd).
    #[arg(long, default_value = "mnist-sd")]
    pub model: String,
    /// How many digits to generate (spread evenly over digits and prompt templates).
    #[arg(long, default_value_t = 1000)]
    pub samples: usize,
    #[arg(long, value_enum, default_value_t = EvalMode::Plain)]
    pub mode: EvalMode,
    /// DDIM steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f32,
    /// Seed of the initial noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images generated per batch.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// The MNIST file whose held-out rows are the reference.
    #[arg(long, default_value = "data/mnist10k/mnist10k.safetensors")]
    pub data: PathBuf,
    /// Where to write digit_<d>.png grids (default: eval-<model name>/).
    #[arg(long)]
    pub grids: Option<PathBuf>,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub sdu: SduArgs,
}

/// PIDM's score distillation from unconditional generation (`diffusion::sdu`).
#[derive(Args, Debug, Clone)]
pub struct SduArgs {
    /// Correct each conditional step towards an unconditional trajectory with more steps, run
    /// in the clear from the same x_T (PIDM's SDU).
    #[arg(long)]
    pub sdu: bool,
    /// SDU's learning rate.
    #[arg(long, default_value_t = 0.02, requires = "sdu")]
    pub sdu_eta: f32,
    /// Unconditional steps per conditional step (5: 50 for 10, as in the paper).
    #[arg(long, default_value_t = 5, requires = "sdu")]
    pub sdu_refine: usize,
}

impl SduArgs {
    pub fn get(&self) -> Option<Sdu> {
        self.sdu.then_some(Sdu {
            eta: self.sdu_eta,
            refine: self.sdu_refine,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct EvalReport {
    pub model: String,
    pub mode: EvalMode,
    pub samples: usize,
    pub steps: usize,
    pub guidance: f32,
    /// SDU's learning rate and refinement, if it was on.
    pub sdu: Option<(f32, usize)>,
    pub seed: u64,
    /// Fraction of samples the classifier labels as the requested digit.
    pub accuracy: f64,
    pub per_digit_accuracy: Vec<f64>,
    /// FID on classifier features: samples vs the held-out real digits.
    pub fid: f64,
    /// FID on classifier features: first vs second half of the held-out real digits.
    pub fid_floor: f64,
    /// The classifier's accuracy on the held-out real digits.
    pub classifier_accuracy: f64,
    pub seconds: f64,
}

/// A model directory: the path itself if it holds a config.toml, else `<name>` under the models
/// root (`diffusion::models_root`: $SECDIFF_MODELS, or the `models/` next to the binary).
pub fn resolve_model_dir(model: &str) -> Result<PathBuf, String> {
    let root = diffusion::models_root();
    [PathBuf::from(model), root.join(model)]
        .into_iter()
        .find(|p| !model.is_empty() && p.join("config.toml").is_file())
        .ok_or_else(|| {
            format!(
                "no model `{model}` (looked for {model}/config.toml and {}/{model}/config.toml)",
                root.display()
            )
        })
}

fn plain_param(_: &Plain, shape: &[usize], data: Vec<f32>) -> nn::Result<PlainTensor> {
    PlainTensor::new(shape, data)
}

/// The classifier shipped with a model (`classifier.safetensors` + the config's [classifier]).
fn load_classifier(
    dir: &Path,
    files: &ModelFiles,
) -> Result<MnistClassifier<Plain>, Box<dyn std::error::Error>> {
    let cfg = files
        .config
        .classifier
        .as_ref()
        .ok_or("the model config has no [classifier] section")?;
    let weights = WeightsFile::load(&dir.join("classifier.safetensors"))?;
    Ok(MnistClassifier::new(
        &Plain,
        &mut weights.source(plain_param),
        cfg,
    )?)
}

/// Penultimate features and predicted labels of images (N * 28 * 28 values in [-1, 1]).
fn classify(net: &MnistClassifier<Plain>, images: &[f32]) -> nn::Result<(Vec<f32>, Vec<usize>)> {
    let b = Plain;
    let (mut feats, mut labels) = (vec![], vec![]);
    for chunk in images.chunks(500 * SIDE * SIDE) {
        let x = PlainTensor::new(
            &[chunk.len() / (SIDE * SIDE), 1, SIDE, SIDE],
            chunk.to_vec(),
        )?;
        let f = net.features(&b, &x)?;
        let logits = net.logits_from_features(&b, &f)?;
        let classes = b.shape(&logits)[1];
        labels.extend(logits.data().chunks(classes).map(|row| {
            row.iter()
                .enumerate()
                .max_by(|a, c| a.1.total_cmp(c.1))
                .map(|(i, _)| i)
                .unwrap_or(0)
        }));
        feats.extend_from_slice(f.data());
    }
    Ok((feats, labels))
}

/// Generates `args.samples` digits on backend `b` (sample i asks for digit i % 10 with template
/// (i / 10) % templates, so every digit meets every template); returns the images in [-1, 1]
/// and the requested digits. `reveal` turns a batch of outputs into f32 values.
fn generate<B: Backend>(
    b: &B,
    files: &ModelFiles,
    make: impl FnMut(&B, &[usize], Vec<f32>) -> nn::Result<B::Param>,
    reveal: impl Fn(&B::Tensor) -> Vec<f32>,
    args: &EvalArgs,
) -> Result<(Vec<f32>, Vec<usize>), Box<dyn std::error::Error>> {
    let pipe = TextToImage::new(b, files, make)?;
    let sdu = args.sdu.get();
    // SDU's unconditional trajectories run in the clear, on the f32 model.
    let plain_pipe = match sdu {
        Some(sdu) => {
            sdu.check()?;
            Some(TextToImage::new(&Plain, files, plain_param)?)
        }
        None => None,
    };
    let c = &files.config;
    let per = c.vae.latent_channels * c.latent_size() * c.latent_size();
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let opts = SampleOptions {
        steps: args.steps,
        guidance: args.guidance,
    };
    let bar = ProgressBar::new((args.samples * args.steps) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} steps, eta {eta}",
        )
        .expect("static template"),
    );
    bar.set_prefix("eval");
    let (mut images, mut digits) = (vec![], vec![]);
    for start_i in (0..args.samples).step_by(args.batch) {
        let n = args.batch.min(args.samples - start_i);
        let prompts: Vec<String> = (start_i..start_i + n)
            .map(|i| prompt_for(i % 10, (i / 10) % TEMPLATES.len()))
            .collect();
        let noise: Vec<f32> = (0..n * per)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let targets = match (sdu, &plain_pipe) {
            (Some(sdu), Some(plain)) => {
                let shape = [n, c.vae.latent_channels, c.latent_size(), c.latent_size()];
                let x_t = PlainTensor::new(&shape, noise.clone())?;
                let targets = sdu_targets(plain, &x_t, args.steps, sdu, |_, _| {})?;
                Some(SduTargets::public(b, sdu.eta, &targets)?)
            }
            _ => None,
        };
        let x = pipe.sample_with(b, &prompts, &noise, opts, targets.as_ref(), |_| {
            bar.inc(n as u64)
        })?;
        images.extend(reveal(&x).into_iter().map(|v| v.clamp(-1.0, 1.0)));
        digits.extend((start_i..start_i + n).map(|i| i % 10));
    }
    bar.finish_and_clear();
    Ok((images, digits))
}

pub fn run(args: EvalArgs) -> Result<(), Box<dyn std::error::Error>> {
    if args.samples == 0 || args.batch == 0 {
        return Err("--samples and --batch must be positive".into());
    }
    let start = Instant::now();
    let dir = resolve_model_dir(&args.model)?;
    let files = ModelFiles::load(&dir)?;
    let classifier = load_classifier(&dir, &files)?;
    let (_, held_out) = Digits::load(&args.data)?.split()?;

    let (real_feats, real_labels) = classify(&classifier, &held_out.images)?;
    let classifier_accuracy = real_labels
        .iter()
        .zip(&held_out.labels)
        .filter(|(p, l)| **p == **l as usize)
        .count() as f64
        / held_out.len() as f64;
    let dim = real_feats.len() / held_out.len();
    let half = held_out.len() / 2 * dim;
    let fid_floor = frechet_distance(&real_feats[..half], &real_feats[half..2 * half], dim);

    // Approx: the secure engine's fixed-point arithmetic and nonlinear kernels (default methods
    // and precision), in plaintext; weights are rounded to the grid as MPC would share them.
    let (images, digits) = match args.mode {
        EvalMode::Plain => generate(&Plain, &files, plain_param, |x| x.data().to_vec(), &args)?,
        EvalMode::Approx => generate(
            &Approx::default(),
            &files,
            |b: &Approx, shape: &[usize], data: Vec<f32>| b.public(shape, &data),
            |x: &ApproxTensor| x.data().iter().map(|&v| v as f32).collect(),
            &args,
        )?,
    };
    let (feats, predicted) = classify(&classifier, &images)?;
    let mut per_digit = [(0usize, 0usize); 10];
    for (&p, &d) in predicted.iter().zip(&digits) {
        per_digit[d].1 += 1;
        per_digit[d].0 += usize::from(p == d);
    }
    let correct: usize = per_digit.iter().map(|x| x.0).sum();
    let fid = frechet_distance(&feats, &real_feats, dim);

    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| args.model.clone());
    let grids = args
        .grids
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("eval-{name}")));
    let img = SIDE * SIDE;
    for d in 0..10 {
        let picked: Vec<f32> = digits
            .iter()
            .enumerate()
            .filter(|(_, &x)| x == d)
            .take(64)
            .flat_map(|(i, _)| images[i * img..(i + 1) * img].iter().copied())
            .collect();
        if !picked.is_empty() {
            nn::sd::grid::write_grid(&grids.join(format!("digit_{d}.png")), &picked, SIDE, 8)?;
        }
    }
    let report = EvalReport {
        model: name,
        mode: args.mode,
        samples: args.samples,
        steps: args.steps,
        guidance: args.guidance,
        sdu: args.sdu.get().map(|s| (s.eta, s.refine)),
        seed: args.seed,
        accuracy: correct as f64 / args.samples as f64,
        per_digit_accuracy: per_digit
            .iter()
            .map(|&(ok, all)| {
                if all == 0 {
                    f64::NAN
                } else {
                    ok as f64 / all as f64
                }
            })
            .collect(),
        fid,
        fid_floor,
        classifier_accuracy,
        seconds: start.elapsed().as_secs_f64(),
    };
    println!(
        "{}: {} samples, {} DDIM steps{}, guidance {}: accuracy {:.1}%, FID {:.3} (floor {:.3}); \
         classifier {:.2}% on held-out digits; grids in {}",
        report.model,
        report.samples,
        report.steps,
        report
            .sdu
            .map(|(eta, m)| format!(" + SDU (eta {eta}, {m} unconditional steps per step)"))
            .unwrap_or_default(),
        report.guidance,
        100.0 * report.accuracy,
        report.fid,
        report.fid_floor,
        100.0 * report.classifier_accuracy,
        grids.display()
    );
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        nn::sd::weights::write_atomic(path, text.as_bytes())?;
    }
    Ok(())
}
