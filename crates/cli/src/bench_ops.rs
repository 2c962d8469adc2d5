//! `secdiff bench ops`: runs protocols of the `mpc::bench` registry on random inputs with three
//! parties and prints, per op, wall time, bytes (total and per party), rounds and the error
//! against plaintext; `--json` writes one record per op.
//!
//! The three parties run as threads of this process over the in-memory mesh by default, as three
//! `secdiff party` child processes over loopback TCP with `--processes`, or as already running
//! parties described by `--parties parties.toml` (this process is then their client).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use indicatif::{ProgressBar, ProgressStyle};
use mpc::bench::{
    prepare_inputs, run_local_bench, summarize, BenchOp, BenchOutput, BenchRecord, CpuClock,
    PartyRun,
};
use mpc::{FixedConfig, TruncMethod};
use net::{connect_parties, Message, PartiesConfig, Peer, RoleLink};
use serde::Serialize;

use crate::party::{BenchReply, Job};

#[derive(clap::Args, Debug)]
pub struct BenchOpsArgs {
    /// Comma-separated ops (registered: see `mpc::bench::registry`).
    #[arg(long, value_delimiter = ',', default_value = "mul,matmul,less")]
    pub ops: Vec<String>,
    /// Problem size in elements (for matmul: of each square matrix). Default: each op's own
    /// (1M; 256 x 256 for matmul).
    #[arg(long)]
    pub n: Option<usize>,
    /// Approximation method of the nonlinear ops (e.g. `cipherdm` for silu; see `secdiff bench
    /// accuracy` for each function's methods). Default: each function's best (ours). An op may
    /// also name its method itself: `--ops silu:cipherdm`.
    #[arg(long)]
    pub method: Option<String>,
    /// Truncation after each fixed-point product: robust (exact to 1 ulp; the deployed
    /// default, the class SPU's ABY3 uses), fast (ABY3-style, fails with a huge error with
    /// probability ~|v| 2^-28 per product), or both.
    #[arg(long, default_value = "robust")]
    pub trunc: String,
    /// Write the records as a JSON array to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Timed runs per op (after three untimed warm-up runs); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Seed of the inputs.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Fractional bits.
    #[arg(long, default_value_t = 18)]
    pub frac_bits: u32,
    /// Run the parties as three child processes over loopback TCP.
    #[arg(long, conflicts_with = "parties")]
    pub processes: bool,
    /// Use the running parties of this deployment.
    #[arg(long)]
    pub parties: Option<PathBuf>,
}

#[derive(Serialize)]
struct JsonRecord<'a> {
    op: &'a str,
    /// The approximation method ("-" for the core protocols, which have none).
    method: &'a str,
    /// The truncation method.
    trunc: &'a str,
    n: usize,
    seconds: f64,
    /// CPU seconds of the three parties together (median over the runs).
    cpu_seconds: f64,
    bytes_total: u64,
    bytes_per_party: [u64; 3],
    rounds: u64,
    max_abs_err: f64,
    max_rel_err: f64,
    mode: &'a str,
}

fn methods(s: &str) -> Result<Vec<TruncMethod>, Box<dyn Error>> {
    match s {
        "both" => Ok(vec![TruncMethod::Fast, TruncMethod::Robust]),
        m => Ok(vec![TruncMethod::parse(m).ok_or_else(|| {
            format!("--trunc must be fast, robust or both, got {m}")
        })?]),
    }
}

/// Three `secdiff party` children on free loopback ports, plaintext links; killed on drop.
struct Children {
    procs: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `n` distinct free loopback ports. The listeners that found them are all held until the last
/// is bound: a port found and released at once can be handed out again by the next bind, and
/// two parties given one port fail to start (rare, but it ended a side-by-side run).
fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

fn spawn_children() -> Result<(Children, PathBuf), Box<dyn Error>> {
    let dir = std::env::temp_dir().join(format!("secdiff-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut toml = String::from(
        "session = 7\ntls = false\nrecv_timeout_secs = 120\nconnect_timeout_secs = 30\n",
    );
    let ports = free_ports(6)?;
    for (id, pair) in ports.chunks(2).enumerate() {
        toml.push_str(&format!(
            "\n[[party]]\nid = {id}\nmesh = \"127.0.0.1:{}\"\nclient = \"127.0.0.1:{}\"\n",
            pair[0], pair[1]
        ));
    }
    let path = dir.join("parties.toml");
    std::fs::write(&path, toml)?;
    let exe = std::env::current_exe()?;
    let mut kids = Children {
        procs: Vec::new(),
        dir,
    };
    for id in 0..3 {
        kids.procs.push(
            Command::new(&exe)
                .args(["party", "--id", &id.to_string(), "--config"])
                .arg(&path)
                .spawn()?,
        );
    }
    Ok((kids, path))
}

/// Run one op at the parties behind `links` (driver side).
fn run_remote(
    links: &[RoleLink; 3],
    op: &dyn BenchOp,
    n: usize,
    cfg: FixedConfig,
    repeat: usize,
    seed: u64,
) -> Result<BenchRecord, Box<dyn Error>> {
    let (inputs, dealt) = prepare_inputs(op, n, cfg.fixed_point(), seed)?;
    let job = Job::BenchOps {
        op: op.name().to_string(),
        frac_bits: cfg.frac_bits,
        method: cfg.trunc.name().to_string(),
        repeat,
        inputs: inputs.len(),
    };
    let text = serde_json::to_string(&job)?;
    for (i, link) in links.iter().enumerate() {
        link.send_msg(&Message::Control(text.clone()))?;
        for d in &dealt {
            link.send(d[i].to_bytes())?;
        }
    }
    let mut runs: Vec<Vec<PartyRun>> = Vec::with_capacity(3);
    for (i, link) in links.iter().enumerate() {
        let reply: BenchReply = match link.recv_msg()? {
            Message::Control(t) => {
                serde_json::from_str(&t).map_err(|e| format!("P{i} sent a bad reply ({e})"))?
            }
            other => return Err(format!("P{i} sent {other:?} instead of a reply").into()),
        };
        let output = std::sync::Arc::new(BenchOutput::from_bytes(i, &link.recv()?)?);
        if reply.runs.is_empty() {
            return Err(format!("P{i} reported no runs").into());
        }
        runs.push(
            reply
                .runs
                .into_iter()
                .map(|r| PartyRun {
                    seconds: r.seconds,
                    cpu_seconds: r.cpu_seconds,
                    bytes: r.bytes,
                    rounds: r.rounds,
                    output: output.clone(),
                })
                .collect(),
        );
    }
    let runs: [Vec<PartyRun>; 3] = runs.try_into().map_err(|_| "three replies")?;
    Ok(summarize(op, cfg, &inputs, &runs, CpuClock::PerParty)?)
}

fn write_json_atomically(path: &Path, records: &[JsonRecord<'_>]) -> Result<(), Box<dyn Error>> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(records)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The registered op for `name` with the approximation method `method` (if given and the name
/// does not already carry one).
fn resolve_op(name: &str, method: Option<&str>) -> Result<Box<dyn BenchOp>, Box<dyn Error>> {
    let full = match method {
        Some(m) if !name.contains(':') && m != "default" => {
            if mpc::nonlinear::catalog::Op::parse(name, None).is_err() {
                return Err(
                    format!("op {name:?} has no approximation methods (--method {m})").into(),
                );
            }
            format!("{name}:{m}")
        }
        _ => name.to_string(),
    };
    mpc::bench::find(&full).ok_or_else(|| {
        let known: Vec<&str> = mpc::bench::registry().iter().map(|o| o.name()).collect();
        format!("unknown op {full:?} (known: {})", known.join(", ")).into()
    })
}

/// (function, approximation method) of a registered op name: `silu:cipherdm` -> (silu,
/// cipherdm), `silu` -> (silu, its default), `mul` -> (mul, "-").
fn op_and_method(name: &str) -> (String, String) {
    if let Some((f, m)) = name.split_once(':') {
        return (f.to_string(), m.to_string());
    }
    match mpc::nonlinear::catalog::Op::parse(name, None) {
        Ok(op) => (name.to_string(), op.method().to_string()),
        Err(_) => (name.to_string(), "-".to_string()),
    }
}

pub fn run(args: BenchOpsArgs) -> Result<(), Box<dyn Error>> {
    let methods = methods(&args.trunc)?;
    let ops: Vec<Box<dyn BenchOp>> = args
        .ops
        .iter()
        .map(|name| resolve_op(name, args.method.as_deref()))
        .collect::<Result<_, _>>()?;
    if let Some(n) = args.n {
        if n == 0 || n > 1 << 28 {
            return Err(format!("--n must be in 1..=2^28, got {n}").into());
        }
    }
    // Remote parties: spawned children or an existing deployment.
    let (children, config) = if args.processes {
        let (c, p) = spawn_children()?;
        (Some(c), Some(p))
    } else {
        (None, args.parties.clone())
    };
    let links = match &config {
        Some(p) => Some(connect_parties(&PartiesConfig::load(p)?, Peer::Client)?),
        None => None,
    };
    let mode = if args.processes {
        "processes"
    } else if args.parties.is_some() {
        "parties"
    } else {
        "threads"
    };
    let bar = ProgressBar::new((ops.len() * methods.len()) as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("template"));
    let mut records = Vec::new();
    for op in &ops {
        for &m in &methods {
            bar.set_message(format!("{} ({m})", op.name()));
            let cfg = FixedConfig::new(args.frac_bits, m);
            let n = args.n.unwrap_or(op.default_n());
            let rec = match &links {
                Some(l) => run_remote(l, op.as_ref(), n, cfg, args.repeat, args.seed)?,
                None => run_local_bench(op.as_ref(), n, cfg, args.repeat, args.seed)?,
            };
            bar.inc(1);
            records.push(rec);
        }
    }
    bar.finish_and_clear();
    if let Some(l) = &links {
        if children.is_some() {
            let bye = Message::Control(serde_json::to_string(&Job::Shutdown)?);
            for link in l {
                link.send_msg(&bye)?;
            }
        }
    }
    if let Some(mut c) = children {
        for p in &mut c.procs {
            let st = p.wait()?;
            if !st.success() {
                return Err(format!("a party process exited with {st}").into());
            }
        }
    }
    println!(
        "{:<10} {:<18} {:<6} {:>9} {:>10} {:>8} {:>11} {:>26} {:>6} {:>10} {:>10}",
        "op",
        "method",
        "trunc",
        "n",
        "seconds",
        "CPU s",
        "MB total",
        "MB per party",
        "rounds",
        "max abs",
        "max rel"
    );
    let named: Vec<(String, String)> = records.iter().map(|r| op_and_method(&r.op)).collect();
    for (r, (op, method)) in records.iter().zip(&named) {
        let mb = |b: u64| b as f64 / 1e6;
        println!(
            "{:<10} {:<18} {:<6} {:>9} {:>10.4} {:>8.4} {:>11.2} {:>26} {:>6} {:>10.2e} {:>10.2e}",
            op,
            method,
            r.method,
            r.n,
            r.seconds,
            r.cpu_seconds,
            mb(r.bytes_total),
            format!(
                "{:.2}/{:.2}/{:.2}",
                mb(r.bytes_per_party[0]),
                mb(r.bytes_per_party[1]),
                mb(r.bytes_per_party[2])
            ),
            r.rounds,
            r.max_abs_err,
            r.max_rel_err
        );
    }
    println!("(mode: {mode}; seconds: median of {} runs of the slowest party; CPU s: median of the three parties' CPU time together; rounds: most metered by a party)", args.repeat);
    if let Some(path) = &args.json {
        let json: Vec<JsonRecord> = records
            .iter()
            .zip(&named)
            .map(|(r, (op, method))| JsonRecord {
                op,
                method,
                trunc: &r.method,
                n: r.n,
                seconds: r.seconds,
                cpu_seconds: r.cpu_seconds,
                bytes_total: r.bytes_total,
                bytes_per_party: r.bytes_per_party,
                rounds: r.rounds,
                max_abs_err: r.max_abs_err,
                max_rel_err: r.max_rel_err,
                mode,
            })
            .collect();
        write_json_atomically(path, &json)?;
    }
    Ok(())
}
