//! `secdiff party --id I --config parties.toml`: one computing party as an OS process.
//!
//! The party binds its client port, joins the TCP mesh with the other two parties, agrees PRF
//! keys with them, and then serves jobs from a driver (the client) until it is told to shut down.
//! A job is a [`Job`] sent as a JSON control message; its inputs and outputs travel as raw frames
//! on the same link. New kinds of work (sampling, issue 5) are new `Job` variants.
//!
//! A failure (a dead peer, a malformed message) is reported to the driver and ends the process
//! with a non-zero status: the three parties' key streams are then out of step, so the session
//! cannot go on.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;

use mpc::bench::{run_at_party, sync, BenchOutput, WARMUP_RUNS};
use mpc::{AShare, FixedConfig, OwnerShare, Party, SharedTransport, TruncMethod};
use net::{Message, PartiesConfig, PartyServer, Peer, RoleLink, TcpMesh, PARTIES};
use serde::{Deserialize, Serialize};

#[derive(clap::Args, Debug)]
pub struct PartyArgs {
    /// This party's id (0, 1 or 2).
    #[arg(long)]
    pub id: usize,
    /// The deployment description (`parties.toml`).
    #[arg(long)]
    pub config: PathBuf,
}

/// Work a driver asks the three parties to do together.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// Run one op of the `bench ops` registry `repeat` times (after `mpc::bench::WARMUP_RUNS`
    /// untimed runs). The driver then
    /// sends one owner share per input; the party replies with [`BenchReply`] and the output
    /// share of the last run.
    BenchOps {
        op: String,
        frac_bits: u32,
        method: String,
        repeat: usize,
        inputs: usize,
    },
    /// Private sampling (issue 5): see `mpc_party` for the messages that follow.
    Sample(Box<crate::mpc_job::SampleJob>),
    /// Private text-to-image sampling (PIDM's setting): see `mpc_party::serve_text_sample`.
    TextSample(Box<crate::mpc_job::TextSampleJob>),
    /// Leave the session and exit.
    Shutdown,
}

/// One timed run at one party.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct RunStats {
    pub seconds: f64,
    #[serde(default)]
    pub cpu_seconds: f64,
    pub bytes: u64,
    pub rounds: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct BenchReply {
    pub runs: Vec<RunStats>,
}

pub fn run(args: PartyArgs) -> Result<(), Box<dyn Error>> {
    if args.id >= PARTIES {
        return Err(format!("--id must be 0, 1 or 2, got {}", args.id).into());
    }
    let cfg = PartiesConfig::load(&args.config)?;
    let server = PartyServer::bind(&cfg, args.id)?;
    let mesh = Arc::new(TcpMesh::connect(&cfg, args.id)?);
    let mut party = match Party::setup(
        Box::new(SharedTransport(mesh.clone())),
        FixedConfig::default(),
    ) {
        Ok(p) => p,
        Err(e) => {
            mesh.abort(&e.to_string());
            return Err(e.into());
        }
    };
    eprintln!("P{}: mesh up, keys agreed; waiting for a driver", args.id);
    loop {
        let link = server.accept(Peer::Client)?;
        loop {
            let msg = match link.recv_msg() {
                Ok(m) => m,
                // The driver went away between jobs: wait for the next one.
                Err(net::NetError::Closed { .. }) => break,
                Err(e) => return Err(e.into()),
            };
            let job: Job = match msg {
                Message::Control(text) => serde_json::from_str(&text)
                    .map_err(|e| format!("driver sent an unknown job ({e}): {text}"))?,
                other => {
                    return Err(format!("driver sent {other:?} where a job was expected").into())
                }
            };
            match job {
                Job::Shutdown => {
                    eprintln!("P{}: shutdown", args.id);
                    return Ok(());
                }
                Job::Sample(_) | Job::TextSample(_) => {
                    if let Err(e) = crate::mpc_party::serve_job(&mut party, &server, &link, &job) {
                        mesh.abort(&e.to_string());
                        link.fail(&e.to_string());
                        return Err(e.into());
                    }
                }
                Job::BenchOps { .. } => {
                    if let Err(e) = serve_bench(&mut party, &link, &job) {
                        // Tell the other parties and the driver why this session ends.
                        mesh.abort(&e.to_string());
                        link.fail(&e.to_string());
                        return Err(e);
                    }
                }
            }
        }
    }
}

fn serve_bench(party: &mut Party, link: &RoleLink, job: &Job) -> Result<(), Box<dyn Error>> {
    let Job::BenchOps {
        op,
        frac_bits,
        method,
        repeat,
        inputs,
    } = job
    else {
        unreachable!("called for bench jobs only");
    };
    let method =
        TruncMethod::parse(method).ok_or_else(|| format!("unknown truncation method {method}"))?;
    let bench_op = mpc::bench::find(op).ok_or_else(|| format!("unknown op {op}"))?;
    party.set_config(FixedConfig::new(*frac_bits, method));
    let me = party.id();
    let shares: Vec<AShare> = (0..*inputs)
        .map(|_| -> Result<AShare, Box<dyn Error>> {
            Ok(OwnerShare::from_bytes(&link.recv()?)?.into_share(me)?)
        })
        .collect::<Result<_, _>>()?;
    let mut runs = Vec::with_capacity(WARMUP_RUNS + repeat);
    let mut last: Option<std::sync::Arc<BenchOutput>> = None;
    for _ in 0..WARMUP_RUNS + repeat.max(&1) {
        let r = run_at_party(party, bench_op.as_ref(), &shares)?;
        runs.push(RunStats {
            seconds: r.seconds,
            cpu_seconds: r.cpu_seconds,
            bytes: r.bytes,
            rounds: r.rounds,
        });
        last = Some(r.output);
    }
    runs.drain(..WARMUP_RUNS);
    // All three finish their last run before any sends its reply: the party that finished
    // first would otherwise encode and send its output share while the others still ran it
    // (the last of fifteen 1M robust products took 0.024-0.026 s, the others 0.016-0.019).
    sync(party)?;
    link.send_msg(&Message::Control(serde_json::to_string(&BenchReply {
        runs,
    })?))?;
    link.send(last.expect("at least one run").to_bytes())?;
    Ok(())
}
