//! `secdiff bench sample`: CipherDM's Tables 4 and 5 for cipherdm-mnist on this machine -- the
//! time and communication of one private sample per image, DDIM-50 (and DDPM-1000 with
//! `--ddpm`), next to plaintext sampling of the same x_T measured in the same run.
//!
//! `--local` (the default) runs the three parties as threads of this process; `--parties
//! parties.toml` drives a deployment (the LAN harness, scripts/lan/run.sh, starts one in network
//! namespaces with shaped links and points this command at it).

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use diffusion::{DdimConfig, Sampler, SeededNoise};
use net::PartiesConfig;
use serde::Serialize;

use crate::cli_error::{CliError, CliResult};
use crate::generate::step_bar;
use crate::mpc_generate::{
    fidelity, plain_reference, run_deployment, run_local, seconds_sampling, summarize, MpcArgs,
    Request,
};
use crate::mpc_job::{SampleJob, SamplerSpec};

#[derive(Args, Debug)]
pub struct BenchSampleArgs {
    #[arg(long, default_value = "cipherdm-mnist")]
    pub model: String,
    /// Images per sample (labels alternate 0, 1, ...).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// DDIM steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Also run ancestral DDPM over every timestep (1000 for cipherdm-mnist: a long run).
    #[arg(long)]
    pub ddpm: bool,
    /// Skip DDIM (with --ddpm: run DDPM only).
    #[arg(long)]
    pub no_ddim: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Take x_T and the labels from CipherDM's test vectors (`ddim50.x_T`, `ddim50.y`, the
    /// first --batch images) instead of seeded noise; DDIM-50 is then also compared with
    /// CipherDM's own x_0 (`ddim50.x_0`).
    #[arg(long, value_name = "CASES_SAFETENSORS")]
    pub cases: Option<PathBuf>,
    /// A name for the network setting in the output (e.g. "lan 0.1 ms 1 Gbit/s").
    #[arg(long, default_value = "loopback")]
    pub network: String,
    /// One JSON record per sampler.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub mpc: MpcArgs,
}

#[derive(Debug, Serialize)]
pub struct SampleRecord {
    pub model: String,
    pub sampler: String,
    pub steps: usize,
    pub batch: usize,
    pub deployment: String,
    pub network: String,
    pub truncation: String,
    pub methods: String,
    pub mpc_seconds: f64,
    pub mpc_seconds_per_image: f64,
    pub mpc_seconds_per_step: f64,
    pub plain_seconds: f64,
    pub plain_seconds_per_image: f64,
    /// mpc_seconds / plain_seconds, both measured in this run.
    pub slowdown: f64,
    pub bytes_total: u64,
    pub bytes_per_image: f64,
    pub bytes_per_party: Vec<u64>,
    pub rounds: u64,
    pub max_abs_diff_vs_plain: f64,
    pub psnr_vs_plain: f64,
    /// Against CipherDM's plaintext x_0 (DDIM-50 on --cases inputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_abs_diff_vs_cipherdm: Option<f64>,
}

/// CipherDM's reference inputs and DDIM-50 output for the first `n` images, NCHW.
struct Reference {
    x_t: Vec<f32>,
    labels: Vec<usize>,
    x0: Vec<f32>,
}

fn read_cases(path: &std::path::Path, n: usize, image: [usize; 3]) -> CliResult<Reference> {
    use nn::weights::TensorFile;
    use nn::{Backend, Plain, PlainTensor};
    let bad = |e: String| CliError::input(path, e);
    let file = TensorFile::open(path).map_err(|e| bad(e.to_string()))?;
    let nchw = |name: &str| -> CliResult<Vec<f32>> {
        let (shape, data) = file.f32(name).map_err(|e| bad(e.to_string()))?;
        let [c, h, w] = image;
        if shape.len() != 4 || shape[1..] != [h, w, c] || shape[0] < n {
            return Err(bad(format!(
                "`{name}` has shape {shape:?}; expected (N >= {n}, {h}, {w}, {c})"
            )));
        }
        let x = PlainTensor::new(&shape, data)?;
        let x = Plain.permute(&Plain.narrow(&x, 0, 0, n)?, &[0, 3, 1, 2])?;
        Ok(x.into_vec())
    };
    let (_, y) = file.i64("ddim50.y").map_err(|e| bad(e.to_string()))?;
    if y.len() < n || y.iter().any(|&v| v < 0) {
        return Err(bad(format!("`ddim50.y` {y:?} has no {n} labels")));
    }
    Ok(Reference {
        x_t: nchw("ddim50.x_T")?,
        labels: y[..n].iter().map(|&v| v as usize).collect(),
        x0: nchw("ddim50.x_0")?,
    })
}

pub fn run(args: BenchSampleArgs) -> CliResult<()> {
    let model = diffusion::resolve_model(&args.model)?;
    let schedule = model.schedule()?;
    if args.batch == 0 {
        return Err(CliError::Usage("--batch must be at least 1".into()));
    }
    let deployment = match &args.mpc.parties {
        Some(p) => Some(PartiesConfig::load(p).map_err(|e| CliError::Usage(e.to_string()))?),
        None => None,
    };
    let [c, h, w] = model.image_shape();
    let shape = [args.batch, c, h, w];
    let reference = args
        .cases
        .as_deref()
        .map(|p| read_cases(p, args.batch, [c, h, w]))
        .transpose()?;
    let labels: Vec<usize> = match (&reference, model.config.unet.num_classes) {
        (Some(r), Some(_)) => r.labels.clone(),
        (None, Some(k)) => (0..args.batch).map(|i| i % k).collect(),
        (_, None) => Vec::new(),
    };
    let mut samplers = Vec::new();
    if !args.no_ddim {
        samplers.push(Sampler::Ddim(DdimConfig {
            steps: args.steps,
            ..DdimConfig::default()
        }));
    }
    if args.ddpm {
        samplers.push(Sampler::Ddpm);
    }
    if samplers.is_empty() {
        return Err(CliError::Usage(
            "--no-ddim without --ddpm leaves nothing to run".into(),
        ));
    }
    let methods = args.mpc.methods(&model.name)?;
    let trunc = args.mpc.trunc()?;
    let mut records = Vec::new();
    println!(
        "bench sample: {} batch {} ({}, {}, truncation {trunc}, {})",
        model.name,
        args.batch,
        args.network,
        if deployment.is_some() {
            "deployment"
        } else {
            "local threads"
        },
        methods.describe()
    );
    println!(
        "  {:<9} {:>12} {:>12} {:>10} {:>12} {:>10} {:>10}",
        "sampler", "mpc s/img", "plain s/img", "slowdown", "MB/img", "rounds", "max diff"
    );
    for sampler in samplers {
        let steps = sampler.timesteps(&schedule)?.len();
        let job = SampleJob {
            model: model.name.clone(),
            unet: model.config.unet.clone(),
            schedule: model.config.schedule.clone(),
            sampler: SamplerSpec::of(&sampler),
            shape,
            frac_bits: args.mpc.frac_bits,
            truncation: trunc.name().into(),
            methods: methods.names(),
        };
        crate::mpc_party::validate(&job).map_err(|e| CliError::Usage(e.to_string()))?;
        let mut rng = SeededNoise::new(args.seed);
        let x_t = match &reference {
            Some(r) => r.x_t.clone(),
            None => rng.normal(shape.iter().product()),
        };
        let req = Request {
            job: &job,
            model: &model,
            public_weights: args.mpc.public_weights,
            x_t: &x_t,
            labels: &labels,
        };
        let bar = step_bar(steps);
        let on_step = |done: usize, _: usize| bar.set_position(done as u64);
        let start = Instant::now();
        let outcome = match &deployment {
            None => run_local(&req, &mut rng, on_step),
            Some(cfg) => {
                run_deployment(cfg, &req, args.mpc.serve_weights, false, &mut rng, on_step)
            }
        };
        bar.finish_and_clear();
        let outcome = outcome?;
        let _wall = start.elapsed();
        let report = summarize(
            &outcome,
            args.mpc.deployment_name(),
            &job.settings(),
            args.mpc.public_weights,
        );
        let (want, plain_seconds) = plain_reference(
            &model,
            &sampler,
            shape,
            &x_t,
            &labels,
            outcome.noise.clone(),
        )?;
        let (max, psnr) = fidelity(&outcome.x0, &want);
        let secs = seconds_sampling(&outcome);
        let n = args.batch as f64;
        let rec = SampleRecord {
            model: model.name.clone(),
            sampler: sampler.name().into(),
            steps,
            batch: args.batch,
            deployment: report.deployment.clone(),
            network: args.network.clone(),
            truncation: report.truncation.clone(),
            methods: report.methods.clone(),
            mpc_seconds: secs,
            mpc_seconds_per_image: secs / n,
            mpc_seconds_per_step: secs / steps as f64,
            plain_seconds,
            plain_seconds_per_image: plain_seconds / n,
            slowdown: secs / plain_seconds,
            bytes_total: report.bytes_total,
            bytes_per_image: report.bytes_per_image,
            bytes_per_party: report.bytes_per_party.clone(),
            rounds: report.rounds,
            max_abs_diff_vs_plain: max,
            psnr_vs_plain: psnr,
            max_abs_diff_vs_cipherdm: match (&reference, &job.sampler) {
                (Some(r), SamplerSpec::Ddim { steps: 50, .. }) => {
                    Some(fidelity(&outcome.x0, &r.x0).0)
                }
                _ => None,
            },
        };
        println!(
            "  {:<9} {:>12.2} {:>12.4} {:>9.0}x {:>12.1} {:>10} {:>10.2e}",
            format!("{}-{steps}", rec.sampler),
            rec.mpc_seconds_per_image,
            rec.plain_seconds_per_image,
            rec.slowdown,
            rec.bytes_per_image / 1e6,
            rec.rounds,
            rec.max_abs_diff_vs_plain
        );
        if let Some(d) = rec.max_abs_diff_vs_cipherdm {
            println!("  x_0 vs CipherDM's own DDIM-50 sample: max abs diff {d:.2e}");
        }
        records.push(rec);
    }
    if args.mpc.shutdown_parties {
        if let Some(cfg) = &deployment {
            crate::mpc_generate::shutdown(cfg);
        }
    }
    if let Some(path) = &args.json {
        let mut json =
            serde_json::to_vec_pretty(&records).map_err(|e| CliError::Other(e.to_string()))?;
        json.push(b'\n');
        crate::output::write_file(path, &json)?;
    }
    Ok(())
}
