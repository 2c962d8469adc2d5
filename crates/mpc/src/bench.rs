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

impl BenchOutput {
    /// Wire form for a party's reply to a driver: tag (0 arith, 1 bits), then the components.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            BenchOutput::Arith(a) => {
                b.push(0);
                b.push(a.shape().len() as u8);
                for d in a.shape() {
                    b.extend_from_slice(&(*d as u64).to_le_bytes());
                }
                crate::wire::push_words(&mut b, a.mine().data());
                crate::wire::push_words(&mut b, a.next().data());
            }
            BenchOutput::Bits(x) => {
                b.push(1);
                b.extend_from_slice(&(x.bits() as u64).to_le_bytes());
                b.extend_from_slice(&(x.len() as u64).to_le_bytes());
                crate::wire::push_words(&mut b, x.mine());
                crate::wire::push_words(&mut b, x.next());
            }
        }
        b
    }

    /// Parse a reply of party `from`; every length is checked against the header.
    pub fn from_bytes(from: usize, bytes: &[u8]) -> Result<Self> {
        let bad = || MpcError::invalid("bench output", format!("malformed output from P{from}"));
        let word = |off: usize| -> Result<u64> {
            Ok(u64::from_le_bytes(
                bytes
                    .get(off..off + 8)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            ))
        };
        match bytes.first() {
            Some(0) => {
                let nd = *bytes.get(1).ok_or_else(bad)? as usize;
                let mut shape = Vec::with_capacity(nd);
                for i in 0..nd {
                    shape.push(word(2 + 8 * i)? as usize);
                }
                let n = shape
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .ok_or_else(bad)?;
                let off = 2 + 8 * nd;
                let body = &bytes[off.min(bytes.len())..];
                let parts = crate::wire::split_frame("bench output", from, body, &[8 * n, 8 * n])?;
                let m = crate::wire::decode_words("bench output", from, parts[0], n)?;
                let x = crate::wire::decode_words("bench output", from, parts[1], n)?;
                Ok(BenchOutput::Arith(AShare::from_parts(
                    from,
                    RingTensor::new(&shape, m)?,
                    RingTensor::new(&shape, x)?,
                )?))
            }
            Some(1) => {
                let (bits, len) = (word(1)? as usize, word(9)? as usize);
                let w = bits
                    .checked_mul(crate::bshare::words_for(len))
                    .ok_or_else(bad)?;
                let parts = crate::wire::split_frame(
                    "bench output",
                    from,
                    &bytes[17.min(bytes.len())..],
                    &[8 * w, 8 * w],
                )?;
                let m = crate::wire::decode_words("bench output", from, parts[0], w)?;
                let x = crate::wire::decode_words("bench output", from, parts[1], w)?;
                Ok(BenchOutput::Bits(BShare::from_parts(
                    from, bits, len, m, x,
                )?))
            }
            _ => Err(bad()),
        }
    }
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
        256 * 256
    }
    /// `n` is the elements of each matrix: (s x s) by (s x s) with s = round(sqrt(n)); the
    /// reported size is s.
    fn inputs(&self, n: usize, rng: &mut StdRng) -> Vec<BenchInput> {
        let n = ((n as f64).sqrt().round() as usize).max(1);
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
    let mut ops: Vec<Box<dyn BenchOp>> = vec![Box::new(Mul), Box::new(Matmul), Box::new(Less)];
    ops.extend(crate::nonlinear::bench::bench_ops());
    ops
}

pub fn find(name: &str) -> Option<Box<dyn BenchOp>> {
    registry().into_iter().find(|o| o.name() == name)
}

/// Inputs of `op` at size `n` from `seed`, and their owner shares for the three parties.
pub fn prepare_inputs(
    op: &dyn BenchOp,
    n: usize,
    fp: FixedPoint,
    seed: u64,
) -> Result<(Vec<BenchInput>, Vec<[crate::io::OwnerShare; 3]>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let inputs = op.inputs(n, &mut rng);
    let dealt = deal_inputs(fp, &inputs, &mut rng)?;
    Ok((inputs, dealt))
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

/// CPU time of this process so far (all threads), in seconds.
pub fn process_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; the clock id is a constant of the platform.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Whether the parties of a benchmark run in one process (then each party's CPU clock counts
/// all three) or each in its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuClock {
    Shared,
    PerParty,
}

/// One party's measurement of one run.
#[derive(Clone, Debug)]
pub struct PartyRun {
    pub seconds: f64,
    /// CPU time of this party's process over the run (all its threads; in-process parties
    /// share one process, so each sees all three).
    pub cpu_seconds: f64,
    pub bytes: u64,
    pub rounds: u64,
    /// Shared: a driver attaches the one output a remote party returns to each of its runs.
    pub output: std::sync::Arc<BenchOutput>,
}

/// Run `op` once at this party: meter reset, timed from a sync point to the end of the protocol
/// (inputs already shared, output not yet opened).
pub fn run_at_party(party: &Party, op: &dyn BenchOp, inputs: &[AShare]) -> Result<PartyRun> {
    sync(party)?;
    party.meter().reset();
    let (t, cpu) = (Instant::now(), process_cpu_seconds());
    let output = op.run(party, inputs)?;
    let seconds = t.elapsed().as_secs_f64();
    let cpu_seconds = process_cpu_seconds() - cpu;
    let total = party.meter().total();
    Ok(PartyRun {
        seconds,
        cpu_seconds,
        bytes: total.bytes,
        rounds: total.rounds,
        output: std::sync::Arc::new(output),
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
    /// Median over the repeats of the CPU time of all three parties together (less sensitive
    /// to other load on a shared machine than the wall time).
    pub cpu_seconds: f64,
    pub bytes_total: u64,
    pub bytes_per_party: [u64; 3],
    /// Largest metered round count of a party.
    pub rounds: u64,
    pub max_abs_err: f64,
    pub max_rel_err: f64,
}

/// Untimed runs of an op before its timed ones. A party's first runs grow its heap (memory the
/// allocator then keeps and reuses): measured here in three processes after a single warm-up,
/// the next runs of a 1M robust product took 0.031-0.16, 0.020-0.065 and 0.017-0.041 s, and
/// from the fourth or fifth on 0.016-0.019 s. SPU's harness likewise times its runs after two
/// warm-ups.
pub const WARMUP_RUNS: usize = 3;

/// Run `op` at three in-process parties `repeat` times (after [`WARMUP_RUNS`] untimed runs).
pub fn run_local_bench(
    op: &dyn BenchOp,
    n: usize,
    cfg: FixedConfig,
    repeat: usize,
    seed: u64,
) -> Result<BenchRecord> {
    let (inputs, dealt) = prepare_inputs(op, n, cfg.fixed_point(), seed)?;
    let runs = crate::runner::run_local(cfg, None, |p| {
        let shares: Vec<AShare> = dealt
            .iter()
            .map(|d| d[p.id()].clone().into_share(p.id()))
            .collect::<Result<_>>()?;
        let mut out = Vec::new();
        for _ in 0..WARMUP_RUNS + repeat.max(1) {
            out.push(run_at_party(p, op, &shares)?);
        }
        out.drain(..WARMUP_RUNS);
        Ok(out)
    })?;
    summarize(op, cfg, &inputs, &runs, CpuClock::Shared)
}

/// Build the record from each party's runs (all parties ran the same number of repeats).
pub fn summarize(
    op: &dyn BenchOp,
    cfg: FixedConfig,
    inputs: &[BenchInput],
    runs: &[Vec<PartyRun>; 3],
    clock: CpuClock,
) -> Result<BenchRecord> {
    let reps = runs[0].len();
    let median = |per_run: &dyn Fn(usize) -> f64| {
        let mut v: Vec<f64> = (0..reps).map(per_run).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[reps / 2]
    };
    let seconds = median(&|r| runs.iter().map(|p| p[r].seconds).fold(0.0, f64::max));
    let cpu_seconds = median(&|r| {
        let each = runs.iter().map(|p| p[r].cpu_seconds);
        match clock {
            CpuClock::Shared => each.fold(0.0, f64::max),
            CpuClock::PerParty => each.sum(),
        }
    });
    let last = reps - 1;
    let bytes_per_party = [
        runs[0][last].bytes,
        runs[1][last].bytes,
        runs[2][last].bytes,
    ];
    let rounds = runs.iter().map(|p| p[last].rounds).max().unwrap_or(0);
    let outs: Vec<BenchOutput> = runs.iter().map(|p| (*p[last].output).clone()).collect();
    let got = open_output(cfg.fixed_point(), &outs)?;
    let want = op.reference(inputs);
    let (max_abs_err, max_rel_err) = errors(&got, &want);
    Ok(BenchRecord {
        op: op.name().to_string(),
        method: cfg.trunc.name().to_string(),
        n: op.reported_n(inputs),
        seconds,
        cpu_seconds,
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
    fn outputs_round_trip_and_reject_garbage() {
        let a = AShare::from_parts(
            1,
            RingTensor::new(&[2], vec![1, 2]).unwrap(),
            RingTensor::new(&[2], vec![3, 4]).unwrap(),
        )
        .unwrap();
        let b = BenchOutput::Arith(a.clone()).to_bytes();
        match BenchOutput::from_bytes(1, &b).unwrap() {
            BenchOutput::Arith(x) => assert_eq!(x, a),
            _ => panic!("kind"),
        }
        assert!(BenchOutput::from_bytes(1, &b[..b.len() - 1]).is_err());
        assert!(BenchOutput::from_bytes(1, &[0, 9, 1]).is_err());
        assert!(BenchOutput::from_bytes(1, &[7]).is_err());
        let bits = BShare::from_parts(2, 1, 70, vec![5, 6], vec![7, 8]).unwrap();
        let b = BenchOutput::Bits(bits.clone()).to_bytes();
        match BenchOutput::from_bytes(2, &b).unwrap() {
            BenchOutput::Bits(x) => assert_eq!(x, bits),
            _ => panic!("kind"),
        }
        assert!(BenchOutput::from_bytes(2, &b[..20]).is_err());
    }

    #[test]
    fn registry_ops_run_and_match_their_references() {
        for op in registry() {
            // The nonlinear ops have their own error bounds (tests/nonlinear_secure.rs).
            if crate::nonlinear::catalog::FUNCTIONS
                .contains(&op.name().split(':').next().unwrap_or(""))
            {
                continue;
            }
            let n = if op.name() == "matmul" { 64 } else { 500 };
            for m in [TruncMethod::Fast, TruncMethod::Robust] {
                let r = run_local_bench(op.as_ref(), n, FixedConfig::new(18, m), 1, 1).unwrap();
                assert!(r.max_abs_err < 1e-3, "{}: {r:?}", op.name());
                assert!(r.bytes_total > 0 && r.rounds > 0, "{r:?}");
            }
        }
    }
}
