//! `secdiff bench plain`: one U-Net forward (batch 1, median of many runs) and one DDIM-50
//! sample on the plaintext backend, optionally side by side with JAX's jitted forward of the same
//! model (scripts/bench/jax_unet.py), printing the ratio measured in the same run.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
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
    /// Also time JAX's jitted forward of cipherdm-mnist (scripts/bench/jax_unet.py), in
    /// --rounds alternating rounds of --runs / --rounds forwards each, and print the ratios.
    #[arg(long)]
    pub vs_jax: bool,
    /// Alternating rounds (ours, JAX) with --vs-jax.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
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

/// The JAX script in `--serve` mode: it has loaded the model and checked it against eps.out,
/// and times `k` jitted forwards whenever asked.
struct JaxServer {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl JaxServer {
    fn start(args: &BenchPlainArgs, model_dir: &std::path::Path) -> CliResult<JaxServer> {
        let script = model_dir.join("../../scripts/bench/jax_unet.py");
        if !script.is_file() {
            return Err(CliError::Other(format!(
                "JAX script not found at {}",
                script.display()
            )));
        }
        let python = jax_python(args);
        let mut child = Command::new(&python)
            .arg(&script)
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| CliError::Other(format!("cannot run {}: {e}", python.display())))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut server = JaxServer {
            child,
            stdin,
            stdout,
        };
        let header = server.read_line()?;
        let parsed: serde_json::Value = serde_json::from_str(&header)
            .map_err(|_| CliError::Other(format!("unexpected JAX output: {header}")))?;
        let err = parsed["eps_max_abs_err"].as_f64().unwrap_or(f64::INFINITY);
        if err >= 1e-4 {
            return Err(CliError::Other(format!(
                "the JAX model disagrees with eps.out (max abs error {err})"
            )));
        }
        eprintln!("jax: {header}");
        Ok(server)
    }

    fn read_line(&mut self) -> CliResult<String> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(|e| CliError::Other(format!("reading from the JAX script: {e}")))?;
        if n == 0 {
            return Err(CliError::Other(
                "the JAX script exited early (is jax 0.4.34 + flax 0.9.0 installed for --python?)"
                    .into(),
            ));
        }
        Ok(line)
    }

    /// Seconds of `runs` jitted forwards.
    fn time(&mut self, runs: usize) -> CliResult<Vec<f64>> {
        writeln!(self.stdin, "{runs}")
            .and_then(|_| self.stdin.flush())
            .map_err(|e| CliError::Other(format!("writing to the JAX script: {e}")))?;
        let line = self.read_line()?;
        serde_json::from_str(&line)
            .map_err(|_| CliError::Other(format!("unexpected JAX output: {line}")))
    }
}

impl Drop for JaxServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let mut ours = Vec::new();
    // (JAX seconds, ratio of per-round medians) when comparing.
    let mut jax: Option<(Vec<f64>, Vec<f64>)> = None;
    if args.vs_jax {
        let mut server = JaxServer::start(&args, &model.dir)?;
        let per_round = args.runs.div_ceil(args.rounds.max(1));
        let (mut theirs, mut ratios) = (Vec::new(), Vec::new());
        for _ in 0..args.rounds.max(1) {
            let a = time_forwards(per_round, &mut forward)?;
            let b = server.time(per_round)?;
            ratios.push(median(b.clone()) / median(a.clone()));
            ours.extend(a);
            theirs.extend(b);
        }
        jax = Some((theirs, ratios));
    } else {
        ours = time_forwards(args.runs, &mut forward)?;
    }
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
    if let Some((theirs, ratios)) = jax {
        let jax_min = theirs.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "JAX jitted forward: median {:.3} ms, min {:.3} ms over {} runs (alternating rounds)",
            median(theirs.clone()) * 1e3,
            jax_min * 1e3,
            theirs.len()
        );
        println!(
            "secdiff plain vs JAX: {:.2}x faster (median of {} per-round median ratios), {:.2}x (overall medians), {:.2}x (minimums)",
            median(ratios.clone()),
            ratios.len(),
            median(theirs) / forward_median,
            jax_min / forward_min
        );
    }
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
