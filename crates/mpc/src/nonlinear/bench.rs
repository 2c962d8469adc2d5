//! The nonlinear functions as `secdiff bench ops` entries: one op per function (its default, our
//! best method) named like the function (`silu`), and one per method named `function:method`
//! (`silu:cipherdm`). Inputs are SPU's benchmark distributions (`catalog::Op::bench_inputs`).

use rand::rngs::StdRng;
use rand::Rng;

use super::catalog::Op;
use super::secure::Secure;
use crate::bench::{BenchInput, BenchOp, BenchOutput};
use crate::error::{MpcError, Result};
use crate::{AShare, Party};

struct NonlinearOp {
    name: &'static str,
    op: Op,
}

impl BenchOp for NonlinearOp {
    fn name(&self) -> &'static str {
        self.name
    }

    fn default_n(&self) -> usize {
        match self.op {
            Op::Softmax(_, row) => 64 * row,
            _ => 1_000_000,
        }
    }

    fn inputs(&self, n: usize, rng: &mut StdRng) -> Vec<BenchInput> {
        let values = self.op.bench_inputs(n, rng.gen());
        vec![BenchInput {
            shape: vec![values.len()],
            values,
        }]
    }

    fn run(&self, party: &Party, inputs: &[AShare]) -> Result<BenchOutput> {
        let x = inputs
            .first()
            .ok_or_else(|| MpcError::invalid(self.name, "no input"))?;
        let y = self
            .op
            .run(&Secure::new(party), x)
            .map_err(|e| MpcError::invalid(self.name, e.to_string()))?;
        Ok(BenchOutput::Arith(y))
    }

    fn reference(&self, inputs: &[BenchInput]) -> Vec<f64> {
        inputs
            .first()
            .map_or_else(Vec::new, |x| self.op.exact(&x.values))
    }
}

/// Every function under its own name (default method) and every method as `function:method`.
pub fn bench_ops() -> Vec<Box<dyn BenchOp>> {
    let mut v: Vec<Box<dyn BenchOp>> = Vec::new();
    for op in Op::all() {
        let f = op.function();
        if Op::parse(f, None)
            .map(|d| d.method() == op.method())
            .unwrap_or(false)
        {
            v.push(Box::new(NonlinearOp { name: f, op }));
        }
        v.push(Box::new(NonlinearOp {
            name: op.bench_name(),
            op,
        }));
    }
    v
}

/// Encode `values` and deal them to the three parties as an outside owner (for callers outside
/// this crate, e.g. `secdiff bench accuracy`).
pub fn deal_values(
    fp: ring::FixedPoint,
    values: &[f64],
    seed: u64,
) -> Result<[crate::io::OwnerShare; 3]> {
    use rand::SeedableRng;
    let t = ring::RingTensor::new(&[values.len()], fp.encode_slice(values)?)?;
    Ok(crate::io::deal(&t, &mut StdRng::seed_from_u64(seed)))
}
