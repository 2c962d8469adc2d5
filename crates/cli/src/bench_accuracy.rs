//! `secdiff bench accuracy`: for every nonlinear function and method, runs the secure protocol
//! (three parties in this process) on a dense grid over the function's stated domain (random
//! rows for softmax and the norms) and prints the max absolute, max relative and mean squared
//! error against the exact function, with the metered bytes per element and rounds per call
//! next to the stated bytes (`mpc::nonlinear::cost`).

use std::error::Error;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use mpc::nonlinear::bench::deal_values;
use mpc::nonlinear::catalog::{ErrorStats, Op};
use mpc::nonlinear::cost::stated_cost;
use mpc::nonlinear::secure::Secure;
use mpc::nonlinear::Twin;
use mpc::{reconstruct, run_local, FixedConfig, OutputShare, TruncMethod};
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub struct BenchAccuracyArgs {
    /// Comma-separated functions (default: all), e.g. `silu,softmax`.
    #[arg(long, value_delimiter = ',')]
    pub functions: Vec<String>,
    /// Only this method (default: every method of each function).
    #[arg(long)]
    pub method: Option<String>,
    /// Grid points per elementwise function (row-wise ops run one row / sample).
    #[arg(long, default_value_t = 20001)]
    pub points: usize,
    /// Truncation method of the products: fast or robust.
    #[arg(long, default_value = "fast")]
    pub trunc: String,
    /// Fractional bits.
    #[arg(long, default_value_t = 18)]
    pub frac_bits: u32,
    /// Write the records as a JSON array to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Record {
    function: &'static str,
    method: &'static str,
    n: usize,
    max_abs_err: f64,
    max_rel_err: f64,
    mse: f64,
    bytes_per_element: f64,
    stated_bytes_per_element: f64,
    rounds: u64,
    trunc: &'static str,
}

fn measure(op: Op, points: usize, cfg: FixedConfig) -> Result<Record, Box<dyn Error>> {
    let tw = Twin::new(cfg.frac_bits);
    let n = match op {
        Op::Softmax(..) | Op::GroupNorm(..) | Op::LayerNorm(..) => 1,
        _ => points.max(2),
    };
    let x = tw.decode(&tw.encode(&op.accuracy_inputs(n, 1)));
    let len = x.len();
    op.run(&tw, &tw.encode(&x))?;
    let stated = stated_cost(&tw.take_log(), cfg.frac_bits, cfg.trunc)?;
    let fp = cfg.fixed_point();
    let dealt = deal_values(fp, &x, 7)?;
    let outs = run_local(cfg, None, |p| {
        let share = dealt[p.id()].clone().into_share(p.id())?;
        p.meter().reset();
        let y = op
            .run(&Secure::new(p), &share)
            .map_err(|e| mpc::MpcError::invalid("bench accuracy", e.to_string()))?;
        let t = p.meter().total();
        Ok((OutputShare::of(&y), t.bytes, t.rounds))
    })?;
    let parts: Vec<OutputShare> = outs.iter().map(|o| o.0.clone()).collect();
    let got = fp.decode_slice(reconstruct(&parts)?.data());
    let s = ErrorStats::of(&got, &op.exact(&x));
    let bytes: u64 = outs.iter().map(|o| o.1).sum();
    Ok(Record {
        function: op.function(),
        method: op.method(),
        n: len,
        max_abs_err: s.max_abs,
        max_rel_err: s.max_rel,
        mse: s.mse,
        bytes_per_element: bytes as f64 / len as f64,
        stated_bytes_per_element: stated.bytes as f64 / len as f64,
        rounds: outs.iter().map(|o| o.2).max().unwrap_or(0),
        trunc: cfg.trunc.name(),
    })
}

pub fn run(args: BenchAccuracyArgs) -> Result<(), Box<dyn Error>> {
    let trunc = TruncMethod::parse(&args.trunc)
        .ok_or_else(|| format!("--trunc must be fast or robust, got {}", args.trunc))?;
    let cfg = FixedConfig::new(args.frac_bits, trunc);
    let ops: Vec<Op> = if args.functions.is_empty() && args.method.is_none() {
        Op::all()
    } else {
        let fs: Vec<String> = if args.functions.is_empty() {
            mpc::nonlinear::catalog::FUNCTIONS
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            args.functions.clone()
        };
        let mut v = Vec::new();
        for f in &fs {
            match &args.method {
                Some(m) => v.push(Op::parse(f, Some(m))?),
                None => {
                    Op::parse(f, None)?; // an unknown function is an error
                    v.extend(Op::all().into_iter().filter(|o| o.function() == f));
                }
            }
        }
        v
    };
    let bar = ProgressBar::new(ops.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut records = Vec::with_capacity(ops.len());
    for op in ops {
        bar.set_message(format!("{}:{}", op.function(), op.method()));
        records.push(measure(op, args.points, cfg)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!(
        "{:<11} {:<19} {:>6} {:>10} {:>10} {:>10} {:>9} {:>9} {:>6}",
        "function", "method", "n", "max abs", "max rel", "mse", "B/elem", "stated", "rounds"
    );
    for r in &records {
        println!(
            "{:<11} {:<19} {:>6} {:>10.2e} {:>10.2e} {:>10.2e} {:>9.1} {:>9.1} {:>6}",
            r.function,
            r.method,
            r.n,
            r.max_abs_err,
            r.max_rel_err,
            r.mse,
            r.bytes_per_element,
            r.stated_bytes_per_element,
            r.rounds
        );
    }
    println!(
        "(truncation: {}; bytes: all three parties, per element; rounds: most metered by a party \
         per call; max rel over |exact| >= 2^-10)",
        trunc.name()
    );
    if let Some(path) = args.json {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&records)?)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(())
}
