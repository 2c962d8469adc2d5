//! `secdiff generate --mode mpc`: private sampling with three parties.
//!
//! - `--local`: the three parties run in threads of this process (in-memory mesh between them,
//!   loopback TCP to the client and the model owner, which also run here): a one-command demo
//!   running the very party code of `secdiff party`.
//! - `--parties parties.toml`: this process is the client of a deployment of three `secdiff
//!   party` processes; the weights come from `secdiff owner`, or, with `--serve-weights`, from
//!   this process (a convenience that puts the client and the model owner in one process, so the
//!   client could read the weights: only for demos and benchmarks).
//!
//! The report adds to plain mode's: bytes and rounds (total and per party), a per-op breakdown,
//! and the fidelity of x_0 against plaintext sampling from the same x_T and noise
//! (`max_abs_diff_vs_plain`, `psnr_vs_plain`), computed when the client has the weights (on by
//! default with `--local`; `--compare-plain` in a deployment).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use diffusion::{ModelDir, NoiseSource, Sampler};
use mpc::{FixedConfig, Party, TruncMethod};
use net::{connect_parties, connect_parties_at, LocalMesh, MeshOptions, Message, PartiesConfig};
use net::{PartyServer, Peer, RoleLink, PARTIES};
use nn::mpc::Methods;
use nn::{Backend, Plain, PlainTensor};
use serde::Serialize;

use crate::cli_error::{CliError, CliResult};
use crate::generate::{step_bar, Plan, Sampled};
use crate::mpc_client::{run_client, ClientError, ClientOutcome, ReplayNoise};
use crate::mpc_job::{JobSettings, OpRecord, SampleJob, SamplerSpec};
use crate::party::Job;

#[derive(Args, Debug, Clone)]
pub struct MpcArgs {
    /// Run every role in this process (with the `he` feature, HE mode's `--local` is the same
    /// flag).
    #[cfg(not(feature = "he"))]
    #[arg(long)]
    pub local: bool,
    /// MPC: the deployment to drive as its client.
    #[arg(long, value_name = "PARTIES_TOML", conflicts_with = "local")]
    pub parties: Option<PathBuf>,
    /// MPC deployment: also act as the model owner (this process reads the weights).
    #[arg(long)]
    pub serve_weights: bool,
    /// MPC: the weights are public (the owner sends them in the clear).
    #[arg(long)]
    pub public_weights: bool,
    /// MPC: compute the plaintext sample from the same x_T and noise and compare (needs the
    /// weights; default on with --local).
    #[arg(long, overrides_with = "no_compare_plain")]
    pub compare_plain: bool,
    #[arg(long)]
    pub no_compare_plain: bool,
    /// MPC deployment: tell the parties to exit when the sample is done.
    #[arg(long)]
    pub shutdown_parties: bool,
    /// MPC: fractional bits of the fixed-point encoding.
    #[arg(long, default_value_t = 18)]
    pub frac_bits: u32,
    /// MPC: truncation of fixed-point products (fast: 1 round, rare huge errors; robust: never
    /// a large error, about 50% more bytes).
    #[arg(long, default_value = "robust")]
    pub truncation: String,
    /// MPC: SiLU approximation (ours | cipherdm).
    #[arg(long, default_value = "default")]
    pub silu: String,
    /// MPC: softmax (ours | cipherdm | cipherdm_sqrtn).
    #[arg(long, default_value = "default")]
    pub softmax: String,
    /// MPC: GroupNorm/LayerNorm statistics (fused | plain | pidm_scaled).
    #[arg(long, default_value = "default")]
    pub norm: String,
    /// MPC: GeLU (piecewise_poly | pidm).
    #[arg(long, default_value = "default")]
    pub gelu: String,
    /// MPC: Mish (cipherdm).
    #[arg(long, default_value = "default")]
    pub mish: String,
}

impl MpcArgs {
    /// Refuses the deployment flags outside MPC mode.
    pub fn check_unused(&self) -> CliResult<()> {
        if self.parties.is_some() || self.serve_weights || self.shutdown_parties {
            return Err(CliError::Usage(
                "--parties, --serve-weights and --shutdown-parties are for --mode mpc".into(),
            ));
        }
        Ok(())
    }

    /// The methods of a run of `model` (a name under models/): its defaults
    /// ([`Methods::for_model`]) with the flags that are not `default` applied.
    pub fn methods(&self, model: &str) -> CliResult<Methods> {
        let mut names = Methods::for_model(model).names();
        for (slot, value) in [
            (&mut names.silu, &self.silu),
            (&mut names.softmax, &self.softmax),
            (&mut names.norm, &self.norm),
            (&mut names.gelu, &self.gelu),
            (&mut names.mish, &self.mish),
        ] {
            if value != "default" {
                *slot = value.clone();
            }
        }
        Methods::from_names(&names).map_err(|e| CliError::Usage(e.to_string()))
    }

    /// Where the parties are: `None` for `--local` (every role in this process), else the
    /// deployment of `--parties`.
    pub fn deployment(&self, local: bool) -> CliResult<Option<PartiesConfig>> {
        let deployment = match (&self.parties, local) {
            (Some(p), false) => {
                Some(PartiesConfig::load(p).map_err(|e| CliError::Usage(e.to_string()))?)
            }
            (None, true) => None,
            _ => {
                return Err(CliError::Usage(
                    "--mode mpc needs --local or --parties PARTIES_TOML".into(),
                ))
            }
        };
        if self.serve_weights && deployment.is_none() {
            return Err(CliError::Usage(
                "--serve-weights is for --parties (--local always runs the owner)".into(),
            ));
        }
        Ok(deployment)
    }

    /// The report's name of the deployment: the parties.toml path, or "local".
    pub fn deployment_name(&self) -> String {
        match &self.parties {
            Some(p) => p.display().to_string(),
            None => "local".into(),
        }
    }

    pub fn trunc(&self) -> CliResult<TruncMethod> {
        TruncMethod::parse(&self.truncation).ok_or_else(|| {
            CliError::Usage(format!(
                "--truncation: `{}` is not fast or robust",
                self.truncation
            ))
        })
    }
}

/// The MPC part of the generate report (flattened into it).
#[derive(Clone, Debug, Default, Serialize)]
pub struct MpcReport {
    /// "local" or the parties.toml path.
    pub deployment: String,
    pub weights: String,
    pub frac_bits: u32,
    pub truncation: String,
    pub methods: String,
    /// Bytes the three parties sent each other, in total and per party.
    pub bytes_total: u64,
    pub bytes_per_party: Vec<u64>,
    /// Communication rounds (the most of any party) and per party.
    pub rounds: u64,
    pub rounds_per_party: Vec<u64>,
    pub bytes_per_image: f64,
    /// Share bytes from the client and from the model owner to the parties.
    pub bytes_client_to_parties: u64,
    pub bytes_owner_to_parties: u64,
    pub seconds_setup: f64,
    /// The client's wall time from sending the job to holding x_0.
    pub seconds_client: f64,
    /// Per model op: seconds (the slowest party), bytes (all parties), rounds (the most).
    pub ops: Vec<OpRecord>,
    /// Per protocol, the same.
    pub protocols: Vec<OpRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_abs_diff_vs_plain: Option<f64>,
    /// PSNR of x_0 against plaintext, images in [-1, 1] (peak-to-peak 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psnr_vs_plain: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plain_seconds_sampling: Option<f64>,
}

/// Receive timeout of the local form's links.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(120);

pub fn job_for(plan: &Plan, mpc: &MpcArgs) -> CliResult<SampleJob> {
    let methods = mpc.methods(&plan.model.name)?;
    let trunc = mpc.trunc()?;
    Ok(SampleJob {
        model: plan.model.name.clone(),
        unet: plan.model.config.unet.clone(),
        schedule: plan.model.config.schedule.clone(),
        sampler: SamplerSpec::of(&plan.sampler),
        shape: plan.shape,
        frac_bits: mpc.frac_bits,
        truncation: trunc.name().to_string(),
        methods: methods.names(),
    })
}

/// Merges the parties' per-op records: bytes summed, seconds and rounds the largest.
fn merge(per_party: impl Iterator<Item = Vec<OpRecord>>) -> Vec<OpRecord> {
    let mut m: BTreeMap<String, OpRecord> = BTreeMap::new();
    for records in per_party {
        for r in records {
            let e = m.entry(r.op.clone()).or_insert(OpRecord {
                op: r.op.clone(),
                calls: 0,
                seconds: 0.0,
                bytes: 0,
                rounds: 0,
            });
            e.calls = e.calls.max(r.calls);
            e.seconds = e.seconds.max(r.seconds);
            e.bytes += r.bytes;
            e.rounds = e.rounds.max(r.rounds);
        }
    }
    let mut v: Vec<OpRecord> = m.into_values().collect();
    v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.op.cmp(&b.op)));
    v
}

pub fn summarize(
    outcome: &ClientOutcome,
    deployment: String,
    job: &JobSettings<'_>,
    public_weights: bool,
) -> MpcReport {
    let r = &outcome.reports;
    let bytes_per_party: Vec<u64> = r.iter().map(|p| p.bytes).collect();
    let rounds_per_party: Vec<u64> = r.iter().map(|p| p.rounds).collect();
    let bytes_total: u64 = bytes_per_party.iter().sum();
    MpcReport {
        deployment,
        weights: if public_weights { "public" } else { "secret" }.into(),
        frac_bits: job.frac_bits,
        truncation: job.truncation.to_string(),
        methods: Methods::from_names(job.methods)
            .map(|m| m.describe())
            .unwrap_or_default(),
        bytes_total,
        bytes_per_party,
        rounds: rounds_per_party.iter().copied().max().unwrap_or(0),
        rounds_per_party,
        bytes_per_image: bytes_total as f64 / job.images as f64,
        bytes_client_to_parties: r.iter().map(|p| p.bytes_from_client).sum(),
        bytes_owner_to_parties: r.iter().map(|p| p.bytes_from_owner).sum(),
        seconds_setup: r.iter().map(|p| p.seconds_setup).fold(0.0, f64::max),
        seconds_client: outcome.seconds,
        ops: merge(r.iter().map(|p| p.ops.clone())),
        protocols: merge(r.iter().map(|p| p.protocols.clone())),
        ..MpcReport::default()
    }
}

/// The slowest party's sampling time.
pub fn seconds_sampling(outcome: &ClientOutcome) -> f64 {
    outcome
        .reports
        .iter()
        .map(|p| p.seconds_sampling)
        .fold(0.0, f64::max)
}

/// Plaintext sampling of the same x_T, labels and noise; returns x_0 and the seconds it took.
pub fn plain_reference(
    model: &ModelDir,
    sampler: &Sampler,
    shape: [usize; 4],
    x_t: &[f32],
    labels: &[usize],
    noise: Vec<(usize, Vec<f32>)>,
) -> CliResult<(Vec<f32>, f64)> {
    let unet = model.load_plain_unet()?;
    let schedule = model.schedule()?;
    let b = Plain;
    let n = shape[0];
    let y = match model.config.unet.num_classes {
        Some(k) => Some(b.public(
            &[n, k],
            &nn::unet::one_hot(labels, k).ok_or_else(|| CliError::Usage("bad labels".into()))?,
        )?),
        None => None,
    };
    let start = Instant::now();
    let x0 = sampler.sample(
        &b,
        &schedule,
        PlainTensor::new(&shape, x_t.to_vec())?,
        |x, t| unet.forward(&b, x, &vec![t; n], y.as_ref()),
        &mut ReplayNoise::new(noise),
        |_| {},
    )?;
    Ok((x0.into_vec(), start.elapsed().as_secs_f64()))
}

/// Max absolute difference and PSNR (peak-to-peak 2, images in [-1, 1]).
pub fn fidelity(got: &[f32], want: &[f32]) -> (f64, f64) {
    let mut max = 0.0f64;
    let mut se = 0.0f64;
    for (a, b) in got.iter().zip(want) {
        let d = (*a as f64 - *b as f64).abs();
        max = max.max(d);
        se += d * d;
    }
    let mse = se / got.len().max(1) as f64;
    let psnr = if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (4.0 / mse).log10()
    };
    (max, psnr)
}

fn local_options() -> MeshOptions {
    MeshOptions {
        session: 1,
        recv_timeout: LOCAL_TIMEOUT,
        connect_timeout: Duration::from_secs(30),
        max_frame: net::DEFAULT_MAX_FRAME,
    }
}

/// One party of the local form: the same steps as `secdiff party` for one sampling job.
fn local_party(
    net: LocalMesh,
    server: PartyServer,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut party = Party::setup(Box::new(net), FixedConfig::default())?;
    let link = server.accept(Peer::Client)?;
    let job = match link.recv_msg()? {
        Message::Control(text) => serde_json::from_str::<Job>(&text)?,
        other => return Err(format!("client sent {other:?} instead of a job").into()),
    };
    if let Err(e) = crate::mpc_party::serve_job(&mut party, &server, &link, &job) {
        link.fail(&e.to_string());
        return Err(e.into());
    }
    Ok(())
}

/// What the client asks for and brings: the job, the model (for the owner role played here),
/// and its private inputs.
pub struct Request<'a> {
    pub job: &'a SampleJob,
    pub model: &'a ModelDir,
    pub public_weights: bool,
    /// x_T, NCHW.
    pub x_t: &'a [f32],
    pub labels: &'a [usize],
}

/// Runs the client against three in-process parties and an in-process model owner.
pub fn run_local(
    req: &Request<'_>,
    noise: &mut dyn NoiseSource<Plain>,
    on_step: impl FnMut(usize, usize),
) -> CliResult<ClientOutcome> {
    let Request {
        job,
        model,
        public_weights,
        x_t,
        labels,
    } = *req;
    run_local_roles(
        |links| {
            crate::mpc_owner::share_weights(links, model, public_weights, job.frac_bits)
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
        |links| run_client(links, job, x_t, labels, noise, on_step),
    )
}

/// The local form of any sampling job: three parties in threads (an in-memory mesh between
/// them, loopback TCP links to the roles), the model owner (`owner`) and the client (`client`)
/// connected to them as in a deployment.
pub fn run_local_roles(
    owner: impl FnOnce(&[RoleLink; PARTIES]) -> Result<(), String> + Send,
    client: impl FnOnce(&[RoleLink; PARTIES]) -> Result<ClientOutcome, ClientError>,
) -> CliResult<ClientOutcome> {
    let opts = local_options();
    let mut servers = Vec::with_capacity(PARTIES);
    let mut addrs = Vec::with_capacity(PARTIES);
    for id in 0..PARTIES {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| CliError::Other(format!("cannot listen on loopback: {e}")))?;
        addrs.push(
            listener
                .local_addr()
                .map_err(|e| CliError::Other(e.to_string()))?,
        );
        servers.push(PartyServer::from_listener(id, listener, opts, None));
    }
    let addrs: [std::net::SocketAddr; PARTIES] = addrs.try_into().expect("three addresses");
    let meshes = LocalMesh::triple(LOCAL_TIMEOUT);
    std::thread::scope(|s| {
        let parties: Vec<_> = meshes
            .into_iter()
            .zip(servers)
            .map(|(mesh, server)| s.spawn(move || local_party(mesh, server)))
            .collect();
        let result = (|| -> CliResult<ClientOutcome> {
            let links = connect_parties_at(&addrs, Peer::Client, &opts, None)
                .map_err(|e| CliError::Other(e.to_string()))?;
            // The owner connects once the parties have the client's job (they wait for the
            // client first).
            let owner = s.spawn(|| -> Result<(), String> {
                let links = connect_parties_at(&addrs, Peer::ModelOwner, &opts, None)
                    .map_err(|e| e.to_string())?;
                owner(&links)
            });
            let outcome = client(&links);
            let owner = owner
                .join()
                .unwrap_or_else(|_| Err("the model owner thread panicked".into()));
            let outcome = outcome.map_err(|e| CliError::Other(format!("mpc: {e}")))?;
            owner.map_err(|e| CliError::Other(format!("model owner: {e}")))?;
            Ok(outcome)
        })();
        let mut party_errors = Vec::new();
        for (i, p) in parties.into_iter().enumerate() {
            match p.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => party_errors.push(format!("P{i}: {e}")),
                Err(_) => party_errors.push(format!("P{i}: thread panicked")),
            }
        }
        match result {
            Ok(o) if party_errors.is_empty() => Ok(o),
            Ok(_) => Err(CliError::Other(party_errors.join("; "))),
            Err(e) if party_errors.is_empty() => Err(e),
            Err(e) => Err(CliError::Other(format!(
                "{e} ({})",
                party_errors.join("; ")
            ))),
        }
    })
}

/// Runs the client against a deployment (and the model owner too with `--serve-weights`).
pub fn run_deployment(
    cfg: &PartiesConfig,
    req: &Request<'_>,
    serve_weights: bool,
    shutdown_parties: bool,
    noise: &mut dyn NoiseSource<Plain>,
    on_step: impl FnMut(usize, usize),
) -> CliResult<ClientOutcome> {
    let Request {
        job,
        model,
        public_weights,
        x_t,
        labels,
    } = *req;
    let owner = serve_weights.then_some(|links: &[RoleLink; PARTIES]| {
        crate::mpc_owner::share_weights(links, model, public_weights, job.frac_bits)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    run_deployment_roles(cfg, owner, shutdown_parties, |links| {
        run_client(links, job, x_t, labels, noise, on_step)
    })
}

/// Drives a deployment as the client of any sampling job (`client`), and as its model owner too
/// when `owner` is given; with `shutdown_parties` the parties exit afterwards.
pub fn run_deployment_roles(
    cfg: &PartiesConfig,
    owner: Option<impl FnOnce(&[RoleLink; PARTIES]) -> Result<(), String> + Send>,
    shutdown_parties: bool,
    client: impl FnOnce(&[RoleLink; PARTIES]) -> Result<ClientOutcome, ClientError>,
) -> CliResult<ClientOutcome> {
    let links: [RoleLink; PARTIES] =
        connect_parties(cfg, Peer::Client).map_err(|e| CliError::Other(e.to_string()))?;
    let outcome = std::thread::scope(|s| {
        let owner = owner.map(|share| {
            s.spawn(|| -> Result<(), String> {
                let links = connect_parties(cfg, Peer::ModelOwner).map_err(|e| e.to_string())?;
                share(&links)
            })
        });
        let outcome = client(&links);
        if let Some(owner) = owner {
            let r = owner
                .join()
                .unwrap_or_else(|_| Err("the model owner thread panicked".into()));
            if let (Ok(_), Err(e)) = (&outcome, r) {
                return Err(CliError::Other(format!("model owner: {e}")));
            }
        }
        outcome.map_err(|e| CliError::Other(format!("mpc: {e}")))
    })?;
    if shutdown_parties {
        for link in &links {
            let _ = link.send_msg(&Message::Control(
                serde_json::to_string(&Job::Shutdown).expect("serialises"),
            ));
        }
    }
    Ok(outcome)
}

/// Tells the parties of a deployment to exit (best effort: a party that is gone is gone).
pub fn shutdown(cfg: &PartiesConfig) {
    if let Ok(links) = connect_parties(cfg, Peer::Client) {
        for link in &links {
            let _ = link.send_msg(&Message::Control(
                serde_json::to_string(&Job::Shutdown).expect("serialises"),
            ));
        }
    }
}

/// `generate --mode mpc`.
pub fn run(plan: &mut Plan, mpc: &MpcArgs, local: bool) -> CliResult<(Sampled, MpcReport)> {
    let job = job_for(plan, mpc)?;
    crate::mpc_party::validate(&job).map_err(|e| CliError::Usage(e.to_string()))?;
    let deployment = mpc.deployment(local)?;
    let compare = if mpc.no_compare_plain {
        false
    } else {
        mpc.compare_plain || local
    };
    let steps = plan.sampler.timesteps(&plan.schedule)?.len();
    let bar = step_bar(steps);
    let on_step = |done: usize, _total: usize| bar.set_position(done as u64);
    let x_t = plan.x_t.clone();
    let labels = plan.labels.clone();
    let noise: &mut dyn NoiseSource<Plain> = match &mut plan.step_noise {
        Some(file_noise) => file_noise,
        None => &mut plan.rng,
    };
    let req = Request {
        job: &job,
        model: &plan.model,
        public_weights: mpc.public_weights,
        x_t: &x_t,
        labels: &labels,
    };
    let outcome = match &deployment {
        None => run_local(&req, noise, on_step),
        Some(cfg) => run_deployment(
            cfg,
            &req,
            mpc.serve_weights,
            mpc.shutdown_parties,
            noise,
            on_step,
        ),
    };
    bar.finish_and_clear();
    let outcome = outcome?;
    let mut report = summarize(
        &outcome,
        mpc.deployment_name(),
        &job.settings(),
        mpc.public_weights,
    );
    if compare {
        let (want, secs) = plain_reference(
            &plan.model,
            &plan.sampler,
            plan.shape,
            &x_t,
            &labels,
            outcome.noise.clone(),
        )?;
        let (max, psnr) = fidelity(&outcome.x0, &want);
        report.max_abs_diff_vs_plain = Some(max);
        report.psnr_vs_plain = Some(psnr);
        report.plain_seconds_sampling = Some(secs);
    }
    let sampled = Sampled {
        x0: outcome.x0.clone(),
        seconds_load: report.seconds_setup,
        seconds_sampling: seconds_sampling(&outcome),
    };
    print_table(&report, sampled.seconds_sampling, steps);
    Ok((sampled, report))
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

/// The report as a table on stdout.
pub fn print_table(r: &MpcReport, seconds: f64, steps: usize) {
    println!(
        "mpc ({}, weights {}, f={}, truncation {}, {})",
        r.deployment, r.weights, r.frac_bits, r.truncation, r.methods
    );
    println!(
        "  sampling {seconds:.2} s ({:.3} s/step), {:.1} MB sent by the parties ({}), {} rounds",
        seconds / steps.max(1) as f64,
        mb(r.bytes_total),
        r.bytes_per_party
            .iter()
            .map(|b| format!("{:.1}", mb(*b)))
            .collect::<Vec<_>>()
            .join(" / "),
        r.rounds
    );
    if let (Some(d), Some(p)) = (r.max_abs_diff_vs_plain, r.psnr_vs_plain) {
        println!(
            "  x_0 vs plaintext: max abs diff {d:.2e}, PSNR {p:.1} dB{}",
            r.plain_seconds_sampling
                .map(|s| format!(" (plaintext {s:.3} s, mpc/plain {:.0}x)", seconds / s))
                .unwrap_or_default()
        );
    }
    println!(
        "  {:<18} {:>6} {:>9} {:>11} {:>8}",
        "op", "calls", "seconds", "MB (all)", "rounds"
    );
    for o in &r.ops {
        println!(
            "  {:<18} {:>6} {:>9.3} {:>11.2} {:>8}",
            o.op,
            o.calls,
            o.seconds,
            mb(o.bytes),
            o.rounds
        );
    }
}
