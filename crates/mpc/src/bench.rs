//! The operation registry behind `secdiff bench ops`: each [`BenchOp`] makes its plaintext inputs
//! (the distributions of the SPU peer harness), runs its protocol at one party on shared inputs,
//! and gives the plaintext reference. The same `BenchOp` runs in the in-process runner and in
//! `secdiff party` processes.
//!
//! To add an op (e.g. the nonlinear functions): implement [`BenchOp`] and list it in
//! [`registry`] (nonlinear ops: return them from `crate::nonlinear::bench_ops()` and add that
//! call to [`registry`]).

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ring::{FixedPoint, RingTensor};

use crate::ashare::AShare;
use crate::bshare::{from_planes, BShare};
use crate::config::FixedConfig;
use crate::error::{MpcError, Result};
use crate::io::{deal, reconstruct, OutputShare};
use crate::party::Party;

/// A plaintext input: shape and real values.
#[derive(Clone, Debug)]
pub struct BenchInput {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

/// What an op returns at one party.
#[derive(Clone, Debug)]
pub enum BenchOutput {
    /// A fixed-point tensor.
    Arith(AShare),
    /// One bit per element (comparisons), opened as 0.0 / 1.0.
    Bits(BShare),
}

pub trait BenchOp: Send + Sync {
    fn name(&self) -> &'static str;
    /// Elements run when `--n` is not given.
    fn default_n(&self) -> usize;
    /// Plaintext inputs for size `n` (an op with a fixed size may ignore `n`).
    fn inputs(&self, n: usize, rng: &mut StdRng) -> Vec<BenchInput>;
    /// The secure computation at one party.
    fn run(&self, party: &Party, inputs: &[AShare]) -> Result<BenchOutput>;
    /// The plaintext result.
    fn reference(&self, inputs: &[BenchInput]) -> Vec<f64>;
    /// The size reported as `n` for these inputs (default: elements of the first input).
    fn reported_n(&self, inputs: &[BenchInput]) -> usize {
        inputs.first().map_or(0, |i| i.values.len())
    }
}

/// Standard normal samples (Box-Muller), like numpy's `standard_normal` in distribution.
pub fn standard_normal(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let u: f64 = rng.gen::<f64>().max(f64::MIN_POSITIVE);
            let v: f64 = rng.gen();
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        })
        .collect()
}

struct Mul;
impl BenchOp for Mul {
    fn name(&self) -> &'static str {
        "mul"
    }
    fn default_n(&self) -> usize {
        1_000_000
    }
    fn inputs(&self, n: usize, rng: &mut StdRng) -> Vec<BenchInput> {
        (0..2)
            .map(|_| BenchInput {
                shape: vec![n],
                values: standard_normal(rng, n),
            })
            .collect()
    }
    fn run(&self, p: &Party, x: &[AShare]) -> Result<BenchOutput> {
        Ok(BenchOutput::Arith(p.mul(&x[0], &x[1])?))
    }
    fn reference(&self, x: &[BenchInput]) -> Vec<f64> {
        x[0].values
            .iter()
            .zip(&x[1].values)
            .map(|(a, b)| a * b)
            .collect()
    }
}

struct Matmul;
impl BenchOp for Matmul {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn default_n(&self) -> usize {
        256
    }
    /// `n` is the matrix size: (n x n) by (n x n).
    fn inputs(&self, n: usize, rng: &mut StdRng) -> Vec<BenchInput> {
        (0..2)
            .map(|_| BenchInput {
                shape: vec![n, n],
                values: standard_normal(rng, n * n),
            })
            .collect()
    }
    fn run(&self, p: &Party, x: &[AShare]) -> Result<BenchOutput> {
        Ok(BenchOutput::Arith(p.matmul(&x[0], &x[1])?))
    }
    fn reference(&self, x: &[BenchInput]) -> Vec<f64> {
        let n = x[0].shape[0];
        let (a, b) = (&x[0].values, &x[1].values);
        let mut c = vec![0.0; n * n];
        for i in 0..n {
            for k in 0..n {
                let av = a[i * n + k];
                for j in 0..n {
                    c[i * n + j] += av * b[k * n + j];
                }
            }
        }
        c
    }
    fn reported_n(&self, x: &[BenchInput]) -> usize {
        x[0].shape[0]
    }
}

struct Less;
impl BenchOp for Less {
    fn name(&self) -> &'static str {
        "less"
    }
    fn default_n(&self) -> usize {
        1_000_000
    }
    fn inputs(&self, n: usize, rng: &mut StdRng) -> Vec<BenchInput> {
        vec![BenchInput {
            shape: vec![n],
            values: standard_normal(rng, n),
        }]
    }
    fn run(&self, p: &Party, x: &[AShare]) -> Result<BenchOutput> {
        Ok(BenchOutput::Bits(p.less_than_scalar(&x[0], 0)?))
    }
    fn reference(&self, x: &[BenchInput]) -> Vec<f64> {
        x[0].values
            .iter()
            .map(|&v| (v < 0.0) as u8 as f64)
            .collect()
    }
}

/// All registered ops.
pub fn registry() -> Vec<Box<dyn BenchOp>> {
    vec![Box::new(Mul), Box::new(Matmul), Box::new(Less)]
}

pub fn find(name: &str) -> Option<Box<dyn BenchOp>> {
    registry().into_iter().find(|o| o.name() == name)
}

/// Encode inputs and deal them to the three parties (owner side).
pub fn deal_inputs(
    fp: FixedPoint,
    inputs: &[BenchInput],
    rng: &mut StdRng,
) -> Result<Vec<[crate::io::OwnerShare; 3]>> {
    inputs
        .iter()
        .map(|i| {
            let t = RingTensor::new(&i.shape, fp.encode_slice(&i.values)?)?;
            Ok(deal(&t, rng))
        })
        .collect()
}

/// One party's measurement of one run.
#[derive(Clone, Debug)]
pub struct PartyRun {
    pub seconds: f64,
    pub bytes: u64,
    pub rounds: u64,
    pub output: BenchOutput,
}

/// Run `op` once at this party: meter reset, timed from a sync point to the end of the protocol
/// (inputs already shared, output not yet opened).
pub fn run_at_party(party: &Party, op: &dyn BenchOp, inputs: &[AShare]) -> Result<PartyRun> {
    sync(party)?;
    party.meter().reset();
    let t = Instant::now();
    let output = op.run(party, inputs)?;
    let seconds = t.elapsed().as_secs_f64();
    let total = party.meter().total();
    Ok(PartyRun {
        seconds,
        bytes: total.bytes,
        rounds: total.rounds,
        output,
    })
}

/// A one-byte exchange with both neighbours so that the parties start a timed run together.
pub fn sync(party: &Party) -> Result<()> {
    let cx = party.begin("sync");
    let me = cx.id();
    for d in [1, 2] {
        cx.send_abs((me + d) % 3, vec![0])?;
    }
    for d in [1, 2] {
        cx.recv_abs((me + d) % 3)?;
    }
    Ok(())
}

/// Open an op's output from the three parties' outputs (owner side).
pub fn open_output(fp: FixedPoint, outs: &[BenchOutput]) -> Result<Vec<f64>> {
    match outs.first() {
        Some(BenchOutput::Arith(_)) => {
            let parts: Vec<OutputShare> = outs
                .iter()
                .map(|o| match o {
                    BenchOutput::Arith(a) => Ok(OutputShare::of(a)),
                    _ => Err(MpcError::invalid("bench", "mixed outputs")),
                })
                .collect::<Result<_>>()?;
            Ok(fp.decode_slice(reconstruct(&parts)?.data()))
        }
        Some(BenchOutput::Bits(b0)) => {
            let mut planes = b0.mine().to_vec();
            for o in &outs[1..] {
                match o {
                    BenchOutput::Bits(b) if b.mine().len() == planes.len() => {
                        planes.iter_mut().zip(b.mine()).for_each(|(p, q)| *p ^= q)
                    }
                    _ => return Err(MpcError::invalid("bench", "mixed outputs")),
                }
            }
            Ok(from_planes(&planes, b0.bits(), b0.len())
                .iter()
                .map(|&v| v as f64)
                .collect())
        }
        None => Err(MpcError::invalid("bench", "no outputs")),
    }
}

/// Maximum absolute error, and maximum relative error |got - want| / max(|want|, 1e-3).
pub fn errors(got: &[f64], want: &[f64]) -> (f64, f64) {
    got.iter()
        .zip(want)
        .fold((0.0f64, 0.0f64), |(a, r), (g, w)| {
            let e = (g - w).abs();
            (a.max(e), r.max(e / w.abs().max(1e-3)))
        })
}

/// One line of `secdiff bench ops`.
#[derive(Clone, Debug)]
pub struct BenchRecord {
    pub op: String,
    pub method: String,
    pub n: usize,
    /// Median over the repeats of the slowest party's time.
    pub seconds: f64,
    pub bytes_total: u64,
    pub bytes_per_party: [u64; 3],
    /// Largest metered round count of a party.
    pub rounds: u64,
    pub max_abs_err: f64,
    pub max_rel_err: f64,
}

/// Run `op` at three in-process parties `repeat` times (after one warm-up run).
pub fn run_local_bench(
    op: &dyn BenchOp,
    n: usize,
    cfg: FixedConfig,
    repeat: usize,
    seed: u64,
) -> Result<BenchRecord> {
    let mut rng = StdRng::seed_from_u64(seed);
    let inputs = op.inputs(n, &mut rng);
    let dealt = deal_inputs(cfg.fixed_point(), &inputs, &mut rng)?;
    let runs = crate::runner::run_local(cfg, None, |p| {
        let shares: Vec<AShare> = dealt
            .iter()
            .map(|d| d[p.id()].clone().into_share(p.id()))
            .collect::<Result<_>>()?;
        let mut out = Vec::new();
        for _ in 0..repeat.max(1) + 1 {
            out.push(run_at_party(p, op, &shares)?);
        }
        out.remove(0); // warm-up
        Ok(out)
    })?;
    summarize(op, cfg, &inputs, &runs)
}

/// Build the record from each party's runs (all parties ran the same number of repeats).
pub fn summarize(
    op: &dyn BenchOp,
    cfg: FixedConfig,
    inputs: &[BenchInput],
    runs: &[Vec<PartyRun>; 3],
) -> Result<BenchRecord> {
    let reps = runs[0].len();
    let mut times: Vec<f64> = (0..reps)
        .map(|r| runs.iter().map(|p| p[r].seconds).fold(0.0, f64::max))
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    let seconds = times[reps / 2];
    let last = reps - 1;
    let bytes_per_party = [
        runs[0][last].bytes,
        runs[1][last].bytes,
        runs[2][last].bytes,
    ];
    let rounds = runs.iter().map(|p| p[last].rounds).max().unwrap_or(0);
    let outs: Vec<BenchOutput> = runs.iter().map(|p| p[last].output.clone()).collect();
    let got = open_output(cfg.fixed_point(), &outs)?;
    let want = op.reference(inputs);
    let (max_abs_err, max_rel_err) = errors(&got, &want);
    Ok(BenchRecord {
        op: op.name().to_string(),
        method: cfg.trunc.name().to_string(),
        n: op.reported_n(inputs),
        seconds,
        bytes_total: bytes_per_party.iter().sum(),
        bytes_per_party,
        rounds,
        max_abs_err,
        max_rel_err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TruncMethod;

    #[test]
    fn registry_ops_run_and_match_their_references() {
        for op in registry() {
            let n = if op.name() == "matmul" { 8 } else { 500 };
            for m in [TruncMethod::Fast, TruncMethod::Robust] {
                let r = run_local_bench(op.as_ref(), n, FixedConfig::new(18, m), 1, 1).unwrap();
                assert!(r.max_abs_err < 1e-3, "{}: {r:?}", op.name());
                assert!(r.bytes_total > 0 && r.rounds > 0, "{r:?}");
            }
        }
    }
}
