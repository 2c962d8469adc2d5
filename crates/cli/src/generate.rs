//! `secdiff generate`: sample images from a model. Everything the user gave is validated before
//! any work starts (model, labels, step count, noise file, output paths); outputs are written
//! atomically at the end.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use diffusion::{
    DdimConfig, ModelDir, NoiseSource, Sampler, Schedule, SeededNoise, Spacing, TensorNoise,
};
use nn::unet::one_hot;
use nn::weights::TensorFile;
use nn::{Backend, Plain, PlainTensor};

use crate::cli_error::{CliError, CliResult};
use crate::output;
use crate::report::Report;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Plaintext on this machine (the reference; nothing is private).
    Plain,
    /// HE-Diffusion: CKKS partial encryption, one server (--server ADDR or --local); DDIM unclipped.
    #[cfg(feature = "he")]
    He,
    /// Three-party computation: the parties see only secret shares (--local or --parties).
    Mpc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SamplerKind {
    Ddim,
    Ddpm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SpacingArg {
    Uniform,
    Quad,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A model name under models/ (or $SECDIFF_MODELS), or a model directory: mnist-sd (text to
    /// digit, --prompt) or cipherdm-mnist (CipherDM's label-conditional U-Net, --labels).
    /// Default: mnist-sd in plain mode and for --prompt; cipherdm-mnist with class-label inputs
    /// (--labels, --noise) and otherwise in the mpc and he modes.
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long, value_enum, default_value_t = Mode::Plain)]
    pub mode: Mode,
    #[arg(long, value_enum, default_value_t = SamplerKind::Ddim)]
    pub sampler: SamplerKind,
    /// Sampling steps (DDIM default 50; DDPM always takes every timestep of the schedule).
    #[arg(long)]
    pub steps: Option<usize>,
    /// DDIM eta (0: deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f32,
    /// DDIM timestep spacing.
    #[arg(long, value_enum, default_value_t = SpacingArg::Uniform)]
    pub spacing: SpacingArg,
    /// Do not clip DDIM's predicted x0 to [-1, 1].
    #[arg(long)]
    pub no_clip: bool,
    /// Class labels, one per image, comma-separated (class-conditional models).
    #[arg(long)]
    pub labels: Option<String>,
    /// Number of images (unconditional models; conditional ones take one image per label).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Seed of the initial noise and the step noise (when not read from --noise).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Safetensors file with `x_T` (N,C,H,W) or (N,H,W,C), optionally `noise` (T,N,...) for
    /// the stochastic steps and `y` (N,) labels.
    #[arg(long)]
    pub noise: Option<PathBuf>,
    /// PNG grid of the generated images.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// x_0 as safetensors (`x_0`, (N,C,H,W) float32).
    #[arg(long)]
    pub raw_out: Option<PathBuf>,
    /// JSON report (timings, settings).
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[cfg(feature = "he")]
    #[command(flatten)]
    pub he: Box<crate::he_generate::HeGenerateArgs>,
    /// A text prompt (text-conditioned models such as mnist-sd; none: the empty prompt, i.e.
    /// unconditional digits); --batch images of it.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Classifier-free guidance scale for --prompt (1: no guidance).
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f32,
    #[command(flatten)]
    pub sdu: crate::eval::SduArgs,
    #[command(flatten)]
    pub mpc: Box<crate::mpc_generate::MpcArgs>,
}

impl GenerateArgs {
    /// `--local`: every role in this process (the flag lives with HE's arguments when that
    /// feature is on).
    pub fn local(&self) -> bool {
        #[cfg(feature = "he")]
        return self.he.local;
        #[cfg(not(feature = "he"))]
        return self.mpc.local;
    }

    /// The model to sample: --model, else the best embedded model the request can run: mnist-sd,
    /// or CipherDM's label-conditional model for class-label inputs and for the private modes.
    pub fn model_name(&self) -> &str {
        match &self.model {
            Some(model) => model,
            None if self.prompt.is_some() => "mnist-sd",
            None if self.labels.is_some() || self.noise.is_some() || self.mode != Mode::Plain => {
                "cipherdm-mnist"
            }
            None => "mnist-sd",
        }
    }
}

/// Everything a run needs, validated.
pub struct Plan {
    pub model: ModelDir,
    pub schedule: Schedule,
    pub sampler: Sampler,
    /// One per image; empty for unconditional models.
    pub labels: Vec<usize>,
    /// (N, C, H, W)
    pub shape: [usize; 4],
    /// x_T, NCHW.
    pub x_t: Vec<f32>,
    /// Step noise from the file, if it had any; else seeded noise continues after x_T.
    pub step_noise: Option<TensorNoise>,
    pub rng: SeededNoise,
}

fn parse_labels(text: &str) -> CliResult<Vec<i64>> {
    text.split(',')
        .map(|s| {
            s.trim().parse::<i64>().map_err(|_| {
                CliError::Usage(format!("--labels: `{}` is not an integer label", s.trim()))
            })
        })
        .collect()
}

/// Labels checked against the model's classes.
fn check_labels(labels: &[i64], classes: usize, source: &str) -> CliResult<Vec<usize>> {
    labels
        .iter()
        .map(|&l| {
            if l < 0 || l as usize >= classes {
                Err(CliError::Usage(format!(
                    "{source}: label {l} is outside the model's {classes} classes (0..={})",
                    classes - 1
                )))
            } else {
                Ok(l as usize)
            }
        })
        .collect()
}

/// A (lead..., N, C, H, W) or (lead..., N, H, W, C) tensor from the noise file, as NCHW values.
fn read_images(
    file: &TensorFile,
    name: &str,
    lead: usize,
    image: [usize; 3],
    batch: Option<usize>,
) -> CliResult<(Vec<usize>, Vec<f32>)> {
    let (shape, data) = file
        .f32(name)
        .map_err(|e| CliError::input(file.path(), e))?;
    let [c, h, w] = image;
    let bad = || {
        CliError::input(
            file.path(),
            format!(
                "`{name}` has shape {shape:?}; expected ({}N, {c}, {h}, {w}) or ({}N, {h}, {w}, {c}){}",
                "T, ".repeat(lead),
                "T, ".repeat(lead),
                batch.map(|n| format!(" with N = {n}")).unwrap_or_default()
            ),
        )
    };
    if shape.len() != lead + 4 || batch.is_some_and(|n| shape[lead] != n) {
        return Err(bad());
    }
    let tail = &shape[lead + 1..];
    if tail == [c, h, w] {
        Ok((shape, data))
    } else if tail == [h, w, c] {
        let x = PlainTensor::new(&shape, data)?;
        let mut perm: Vec<usize> = (0..=lead).collect();
        perm.extend([lead + 3, lead + 1, lead + 2]);
        let x = Plain.permute(&x, &perm)?;
        Ok((x.shape().to_vec(), x.into_vec()))
    } else {
        Err(bad())
    }
}

impl Plan {
    pub fn new(args: &GenerateArgs) -> CliResult<Plan> {
        let model = diffusion::resolve_model(args.model_name())?;
        let schedule = model.schedule()?;
        let total = schedule.len();
        let sampler = match args.sampler {
            SamplerKind::Ddpm => {
                if args.steps.is_some_and(|s| s != total) {
                    return Err(diffusion::Error::Steps {
                        steps: args.steps.unwrap_or(0),
                        reason: format!("DDPM takes every one of the schedule's {total} timesteps"),
                    }
                    .into());
                }
                Sampler::Ddpm
            }
            SamplerKind::Ddim => Sampler::Ddim(DdimConfig {
                steps: args.steps.unwrap_or(50),
                eta: args.eta,
                spacing: match args.spacing {
                    SpacingArg::Uniform => Spacing::Uniform,
                    SpacingArg::Quad => Spacing::Quadratic,
                },
                clip_x0: !args.no_clip,
            }),
        };
        sampler.timesteps(&schedule)?;

        for (flag, path) in [
            ("--out", &args.out),
            ("--raw-out", &args.raw_out),
            ("--report", &args.report),
        ] {
            if let Some(p) = path {
                output::check_writable(flag, p)?;
            }
        }
        let image = model.image_shape();
        if args.out.is_some() && !matches!(image[0], 1 | 3) {
            return Err(CliError::Usage(format!(
                "--out: cannot write {}-channel images as PNG (use --raw-out)",
                image[0]
            )));
        }

        let classes = model.config.unet.num_classes;
        let flag_labels = args.labels.as_deref().map(parse_labels).transpose()?;
        let noise_file = args
            .noise
            .as_ref()
            .map(|p| TensorFile::open(p).map_err(|e| CliError::input(p, e)))
            .transpose()?;
        let file_labels = match &noise_file {
            Some(f) if f.contains("y") => {
                Some(f.i64("y").map_err(|e| CliError::input(f.path(), e))?.1)
            }
            _ => None,
        };
        let labels = match (classes, flag_labels, file_labels) {
            (Some(k), Some(flag), file) => {
                if file.as_ref().is_some_and(|f| *f != flag) {
                    return Err(CliError::Usage(format!(
                        "--labels {flag:?} disagree with `y` {:?} in the noise file",
                        file.unwrap_or_default()
                    )));
                }
                check_labels(&flag, k, "--labels")?
            }
            (Some(k), None, Some(file)) => check_labels(&file, k, "`y` in the noise file")?,
            (Some(k), None, None) => {
                return Err(CliError::Usage(format!(
                    "the model is class-conditional ({k} classes): give --labels (one per image)"
                )))
            }
            (None, Some(_), _) => {
                return Err(CliError::Usage(
                    "the model is unconditional: --labels is not allowed".into(),
                ))
            }
            (None, None, _) => Vec::new(),
        };
        if labels.is_empty() && classes.is_some() {
            return Err(CliError::Usage(
                "--labels: at least one label is needed".into(),
            ));
        }
        if args.batch.is_some() && classes.is_some() {
            return Err(CliError::Usage(
                "--batch is for unconditional models; the batch here is the number of labels"
                    .into(),
            ));
        }
        let batch = if classes.is_some() {
            Some(labels.len())
        } else {
            args.batch
        };
        if batch == Some(0) {
            return Err(CliError::Usage("--batch must be at least 1".into()));
        }

        let mut rng = SeededNoise::new(args.seed);
        let (x_t, step_noise, n) = match &noise_file {
            Some(file) => {
                let (shape, x_t) = read_images(file, "x_T", 0, image, batch)?;
                let step_noise = if file.contains("noise") {
                    let (shape, values) = read_images(file, "noise", 1, image, Some(shape[0]))?;
                    if shape[0] != total {
                        return Err(CliError::input(
                            file.path(),
                            format!(
                                "`noise` has {} steps; the schedule has {total} timesteps",
                                shape[0]
                            ),
                        ));
                    }
                    Some(TensorNoise::new(&shape, values)?)
                } else {
                    None
                };
                (x_t, step_noise, shape[0])
            }
            None => {
                let n = batch.unwrap_or(1);
                (rng.normal(n * image.iter().product::<usize>()), None, n)
            }
        };
        Ok(Plan {
            model,
            schedule,
            sampler,
            labels,
            shape: [n, image[0], image[1], image[2]],
            x_t,
            step_noise,
            rng,
        })
    }
}

/// What a mode hands back: x_0 (NCHW, like `Plan::shape`) and its timings.
pub struct Sampled {
    pub x0: Vec<f32>,
    pub seconds_load: f64,
    pub seconds_sampling: f64,
}

pub fn run(args: GenerateArgs) -> CliResult<()> {
    if args.prompt.is_some() || crate::text2img::is_text_model(args.model_name()) {
        return crate::text2img::run(&args);
    }
    if args.sdu.sdu {
        return Err(CliError::Usage(format!(
            "--sdu (PIDM's score distillation) is for text-to-image models such as mnist-sd; \
             {} is not one",
            args.model_name()
        )));
    }
    let started = Instant::now();
    let mut plan = Plan::new(&args)?;
    let (sampled, mpc) = match args.mode {
        Mode::Plain => {
            #[cfg(feature = "he")]
            args.he.check_unused()?;
            args.mpc.check_unused()?;
            (run_plain(&mut plan)?, None)
        }
        #[cfg(feature = "he")]
        Mode::He => {
            args.mpc.check_unused()?;
            (crate::he_generate::run(&mut plan, &args.he)?, None)
        }
        Mode::Mpc => {
            let (sampled, report) = crate::mpc_generate::run(&mut plan, &args.mpc, args.local())?;
            (sampled, Some(report))
        }
    };
    write_outputs(&args, &plan, &sampled, mpc, started)
}

/// A progress bar over the sampling steps (drawn on stderr, hidden when it is not a terminal).
pub fn step_bar(total: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} step {pos}/{len} [{bar:40}] {elapsed_precise} (eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

fn run_plain(plan: &mut Plan) -> CliResult<Sampled> {
    let load_start = Instant::now();
    let unet = plan.model.load_plain_unet()?;
    let seconds_load = load_start.elapsed().as_secs_f64();
    let b = Plain;
    let n = plan.shape[0];
    let x_t = PlainTensor::new(&plan.shape, plan.x_t.clone())?;
    let y = match plan.model.config.unet.num_classes {
        Some(k) => Some(b.public(
            &[n, k],
            &one_hot(&plan.labels, k).expect("labels were checked against the classes"),
        )?),
        None => None,
    };
    let steps = plan.sampler.timesteps(&plan.schedule)?.len();
    let bar = step_bar(steps);
    let noise: &mut dyn NoiseSource<Plain> = match &mut plan.step_noise {
        Some(file_noise) => file_noise,
        None => &mut plan.rng,
    };
    let sampling_start = Instant::now();
    let x0 = plan.sampler.sample(
        &b,
        &plan.schedule,
        x_t,
        |x, t| unet.forward(&b, x, &vec![t; n], y.as_ref()),
        noise,
        |info| bar.set_position(info.done as u64),
    );
    bar.finish_and_clear();
    Ok(Sampled {
        x0: x0?.into_vec(),
        seconds_load,
        seconds_sampling: sampling_start.elapsed().as_secs_f64(),
    })
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn write_outputs(
    args: &GenerateArgs,
    plan: &Plan,
    sampled: &Sampled,
    mpc: Option<crate::mpc_generate::MpcReport>,
    started: Instant,
) -> CliResult<()> {
    let shape = plan.shape;
    if let Some(path) = &args.raw_out {
        output::write_file(
            path,
            &nn::weights::f32_tensors_to_bytes(&[("x_0", &shape, &sampled.x0)])?,
        )?;
    }
    if let Some(path) = &args.out {
        output::write_file(path, &output::grid_png(&shape, &sampled.x0)?)?;
    }
    let steps = plan.sampler.timesteps(&plan.schedule)?.len();
    let ddim = match &plan.sampler {
        Sampler::Ddim(cfg) => Some(cfg),
        Sampler::Ddpm => None,
    };
    let report = Report {
        mode: format!("{:?}", args.mode).to_lowercase(),
        model: plan.model.name.clone(),
        sampler: plan.sampler.name().to_string(),
        steps,
        eta: ddim.map(|c| c.eta),
        spacing: ddim.map(|c| format!("{:?}", c.spacing).to_lowercase()),
        clip_x0: ddim.map(|c| c.clip_x0),
        batch: shape[0],
        labels: plan.labels.clone(),
        image_shape: [shape[1], shape[2], shape[3]],
        seed: args.noise.is_none().then_some(args.seed),
        noise_file: args.noise.as_deref().map(display),
        seconds_total: started.elapsed().as_secs_f64(),
        seconds_load: sampled.seconds_load,
        seconds_sampling: sampled.seconds_sampling,
        seconds_per_step: sampled.seconds_sampling / steps.max(1) as f64,
        png: args.out.as_deref().map(display),
        raw_out: args.raw_out.as_deref().map(display),
        mpc,
    };
    if let Some(path) = &args.report {
        let mut json =
            serde_json::to_vec_pretty(&report).map_err(|e| CliError::Other(e.to_string()))?;
        json.push(b'\n');
        output::write_file(path, &json)?;
    }
    eprintln!(
        "generated {} image(s) with {} {} steps in {:.2} s ({:.1} ms/step){}",
        shape[0],
        report.sampler,
        steps,
        report.seconds_sampling,
        report.seconds_per_step * 1e3,
        args.out
            .as_deref()
            .map(|p| format!(" -> {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}
