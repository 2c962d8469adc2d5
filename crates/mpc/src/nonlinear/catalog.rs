//! Every function and method as one runnable entry, with its stated domain and default inputs:
//! what `secdiff bench ops`, `secdiff bench accuracy` and the tests iterate over.

use std::str::FromStr;

use super::activations::{gelu, gelu_exact, mish, mish_exact, silu, silu_exact};
use super::activations::{GeluMethod, MishMethod, SiluMethod};
use super::exp::{exp_neg, ExpMethod};
use super::norm::{group_norm, layer_norm, NormAffine, NormMethod};
use super::ops::{FxpOps, Result};
use super::reciprocal::{reciprocal, rsqrt, Pow2Range, ReciprocalMethod, RsqrtMethod};
use super::sigmoid::{sigmoid, sigmoid_exact, tanh, SigmoidMethod};
use super::softmax::{softmax, softmax_exact, SoftmaxMethod};
use super::NonlinearError;

/// Bound promised for activation inputs (|x| < 2^10): covers anything a GroupNorm-ed U-Net
/// produces, and sizes the reduced-width comparisons.
pub const ACTIVATION_BOUND: f64 = 1024.0;
/// Bound promised for exp and softmax inputs (scores plus a -1e4 mask).
pub const SCORE_BOUND: f64 = 32768.0;

/// One function with its method.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    Exp(ExpMethod),
    Reciprocal(ReciprocalMethod),
    Rsqrt(RsqrtMethod),
    Sigmoid(SigmoidMethod),
    Tanh(SigmoidMethod),
    Silu(SiluMethod),
    Mish(MishMethod),
    Gelu(GeluMethod),
    /// Softmax over rows of `row`.
    Softmax(SoftmaxMethod, usize),
    /// GroupNorm on (1, channels, side, side) with `groups` groups, eps 1e-6.
    GroupNorm(NormMethod, [usize; 3]),
    /// LayerNorm over rows of `row`, eps 1e-5.
    LayerNorm(NormMethod, usize),
}

/// The function names, as `bench ops` knows them.
pub const FUNCTIONS: &[&str] = &[
    "exp",
    "reciprocal",
    "rsqrt",
    "sigmoid",
    "tanh",
    "silu",
    "mish",
    "gelu",
    "softmax",
    "group_norm",
    "layer_norm",
];

/// Default softmax row length (the SPU benchmark's 64 x 4096).
pub const SOFTMAX_ROW: usize = 4096;
/// Default GroupNorm geometry: 64 channels of 32x32 in 8 groups.
pub const GROUP_NORM_GEOMETRY: [usize; 3] = [64, 32, 8];
/// Default LayerNorm row (CLIP's width).
pub const LAYER_NORM_ROW: usize = 768;

fn parse<M: FromStr<Err = NonlinearError> + Default>(m: Option<&str>) -> Result<M> {
    m.map_or(Ok(M::default()), M::from_str)
}

impl Op {
    /// The op `function` with method `method` (None: the default, our best).
    pub fn parse(function: &str, method: Option<&str>) -> Result<Op> {
        Ok(match function {
            "exp" => Op::Exp(parse(method)?),
            "reciprocal" => Op::Reciprocal(parse(method)?),
            "rsqrt" => Op::Rsqrt(parse(method)?),
            "sigmoid" => Op::Sigmoid(parse(method)?),
            "tanh" => Op::Tanh(parse(method)?),
            "silu" => Op::Silu(parse(method)?),
            "mish" => Op::Mish(parse(method)?),
            "gelu" => Op::Gelu(parse(method)?),
            "softmax" => Op::Softmax(parse(method)?, SOFTMAX_ROW),
            "group_norm" => Op::GroupNorm(parse(method)?, GROUP_NORM_GEOMETRY),
            "layer_norm" => Op::LayerNorm(parse(method)?, LAYER_NORM_ROW),
            _ => {
                return Err(NonlinearError::UnknownMethod {
                    function: "bench",
                    name: function.to_string(),
                    known: FUNCTIONS.join(", "),
                })
            }
        })
    }

    /// Every op with every method.
    pub fn all() -> Vec<Op> {
        let mut v = Vec::new();
        v.extend(ExpMethod::all().into_iter().map(Op::Exp));
        v.extend(ReciprocalMethod::all().into_iter().map(Op::Reciprocal));
        v.extend(RsqrtMethod::all().into_iter().map(Op::Rsqrt));
        v.extend(SigmoidMethod::all().into_iter().map(Op::Sigmoid));
        v.extend(SigmoidMethod::all().into_iter().map(Op::Tanh));
        v.extend(SiluMethod::all().into_iter().map(Op::Silu));
        v.extend(MishMethod::all().into_iter().map(Op::Mish));
        v.extend(GeluMethod::all().into_iter().map(Op::Gelu));
        v.extend(
            SoftmaxMethod::all()
                .into_iter()
                .map(|m| Op::Softmax(m, SOFTMAX_ROW)),
        );
        v.extend(
            NormMethod::all()
                .into_iter()
                .map(|m| Op::GroupNorm(m, GROUP_NORM_GEOMETRY)),
        );
        v.extend(
            NormMethod::all()
                .into_iter()
                .map(|m| Op::LayerNorm(m, LAYER_NORM_ROW)),
        );
        v
    }

    pub fn function(&self) -> &'static str {
        match self {
            Op::Exp(_) => "exp",
            Op::Reciprocal(_) => "reciprocal",
            Op::Rsqrt(_) => "rsqrt",
            Op::Sigmoid(_) => "sigmoid",
            Op::Tanh(_) => "tanh",
            Op::Silu(_) => "silu",
            Op::Mish(_) => "mish",
            Op::Gelu(_) => "gelu",
            Op::Softmax(..) => "softmax",
            Op::GroupNorm(..) => "group_norm",
            Op::LayerNorm(..) => "layer_norm",
        }
    }

    pub fn method(&self) -> &'static str {
        match self {
            Op::Exp(m) => m.name(),
            Op::Reciprocal(m) => m.name(),
            Op::Rsqrt(m) => m.name(),
            Op::Sigmoid(m) | Op::Tanh(m) => m.name(),
            Op::Silu(m) => m.name(),
            Op::Mish(m) => m.name(),
            Op::Gelu(m) => m.name(),
            Op::Softmax(m, _) => m.name(),
            Op::GroupNorm(m, _) | Op::LayerNorm(m, _) => m.name(),
        }
    }

    /// `function:method`, the op's name in `secdiff bench ops`.
    pub fn bench_name(&self) -> &'static str {
        match self {
            Op::Exp(m) => m.bench_name(),
            Op::Reciprocal(m) => m.bench_name(),
            Op::Rsqrt(m) => m.bench_name(),
            Op::Sigmoid(m) => m.bench_name(),
            Op::Tanh(m) => match m {
                SigmoidMethod::Ours => "tanh:ours",
            },
            Op::Silu(m) => m.bench_name(),
            Op::Mish(m) => m.bench_name(),
            Op::Gelu(m) => m.bench_name(),
            Op::Softmax(m, _) => m.bench_name(),
            Op::GroupNorm(m, _) => match m {
                NormMethod::Fused => "group_norm:fused",
                NormMethod::Plain => "group_norm:plain",
                NormMethod::PidmScaled => "group_norm:pidm_scaled",
            },
            Op::LayerNorm(m, _) => match m {
                NormMethod::Fused => "layer_norm:fused",
                NormMethod::Plain => "layer_norm:plain",
                NormMethod::PidmScaled => "layer_norm:pidm_scaled",
            },
        }
    }

    /// The stated domain as an interval (for the elementwise functions).
    pub fn domain(&self) -> (f64, f64) {
        match self {
            Op::Exp(_) => (-14.0, 0.0),
            Op::Reciprocal(_) => (1e-3, 1e4),
            Op::Rsqrt(_) => (1e-4, 1e6),
            Op::Sigmoid(_) | Op::Tanh(_) | Op::Silu(_) | Op::Mish(_) | Op::Gelu(_) => (-16.0, 16.0),
            Op::Softmax(..) | Op::GroupNorm(..) | Op::LayerNorm(..) => (-8.0, 8.0),
        }
    }

    /// A dense grid over the stated domain (log-spaced for reciprocal and rsqrt), or for the
    /// row-wise ops random rows of the stated shape, `n` values about.
    pub fn accuracy_inputs(&self, n: usize, seed: u64) -> Vec<f64> {
        let (lo, hi) = self.domain();
        match self {
            Op::Reciprocal(_) | Op::Rsqrt(_) => {
                let (a, b) = (lo.ln(), hi.ln());
                (0..n)
                    .map(|i| (a + (b - a) * i as f64 / (n - 1) as f64).exp())
                    .collect()
            }
            Op::Softmax(..) | Op::GroupNorm(..) | Op::LayerNorm(..) => self.bench_inputs(n, seed),
            _ => (0..n)
                .map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64)
                .collect(),
        }
    }

    /// The benchmark inputs (SPU's `common.py` distributions), about `n` values (row-wise ops
    /// round to whole rows/samples).
    pub fn bench_inputs(&self, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
        let len = self.round_len(n);
        match self {
            Op::Exp(_) => (0..len).map(|_| -14.0 * rng.uniform()).collect(),
            Op::Reciprocal(_) => (0..len).map(|_| 0.01 + 99.99 * rng.uniform()).collect(),
            Op::Rsqrt(_) => (0..len).map(|_| 0.01 + 99.99 * rng.uniform()).collect(),
            Op::Softmax(..) => (0..len).map(|_| 2.0 * rng.normal()).collect(),
            Op::GroupNorm(..) | Op::LayerNorm(..) => {
                (0..len).map(|_| 0.5 + 3.0 * rng.normal()).collect()
            }
            _ => (0..len).map(|_| 4.0 * rng.normal()).collect(),
        }
    }

    /// `n` rounded up to whole rows or samples.
    pub fn round_len(&self, n: usize) -> usize {
        let unit = match self {
            Op::Softmax(_, row) | Op::LayerNorm(_, row) => *row,
            Op::GroupNorm(_, [c, s, _]) => c * s * s,
            _ => 1,
        };
        n.div_ceil(unit).max(1) * unit
    }

    /// Runs the op on any engine.
    pub fn run<E: FxpOps>(&self, e: &E, x: &E::A) -> Result<E::A> {
        match *self {
            Op::Exp(m) => exp_neg(e, x, m, SCORE_BOUND),
            Op::Reciprocal(m) => reciprocal(e, x, m, Pow2Range::RECIPROCAL),
            Op::Rsqrt(m) => rsqrt(e, x, m, Pow2Range::RSQRT),
            Op::Sigmoid(m) => sigmoid(e, x, m, ACTIVATION_BOUND),
            Op::Tanh(m) => tanh(e, x, m, ACTIVATION_BOUND),
            Op::Silu(m) => silu(e, x, m, ACTIVATION_BOUND),
            Op::Mish(m) => mish(e, x, m, ACTIVATION_BOUND),
            Op::Gelu(m) => gelu(e, x, m, ACTIVATION_BOUND),
            Op::Softmax(m, row) => softmax(e, x, row, None, m, SCORE_BOUND),
            Op::GroupNorm(m, [c, s, g]) => {
                let n = e.len(x) / (c * s * s);
                let (gamma, beta) = norm_params(c);
                let aff = NormAffine::Public {
                    gamma: &gamma,
                    beta: &beta,
                };
                group_norm(e, x, [n, c, s, s], g, aff, 1e-6, m)
            }
            Op::LayerNorm(m, row) => {
                let (gamma, beta) = norm_params(row);
                let aff = NormAffine::Public {
                    gamma: &gamma,
                    beta: &beta,
                };
                layer_norm(e, x, row, aff, 1e-5, m)
            }
        }
    }

    /// The exact function (f64) on the same inputs.
    pub fn exact(&self, x: &[f64]) -> Vec<f64> {
        match *self {
            Op::Exp(_) => x.iter().map(|&v| super::exp::exact(v)).collect(),
            Op::Reciprocal(_) => x.iter().map(|v| 1.0 / v).collect(),
            Op::Rsqrt(_) => x.iter().map(|v| 1.0 / v.sqrt()).collect(),
            Op::Sigmoid(_) => x.iter().map(|&v| sigmoid_exact(v)).collect(),
            Op::Tanh(_) => x.iter().map(|v| v.tanh()).collect(),
            Op::Silu(_) => x.iter().map(|&v| silu_exact(v)).collect(),
            Op::Mish(_) => x.iter().map(|&v| mish_exact(v)).collect(),
            Op::Gelu(_) => x.iter().map(|&v| gelu_exact(v)).collect(),
            Op::Softmax(_, row) => softmax_exact(x, row),
            Op::GroupNorm(_, [c, s, g]) => {
                let (gamma, beta) = norm_params(c);
                let n = x.len() / (c * s * s);
                super::norm::group_norm_exact(x, [n, c, s, s], g, &gamma, &beta, 1e-6)
            }
            Op::LayerNorm(_, row) => {
                let (gamma, beta) = norm_params(row);
                super::norm::layer_norm_exact(x, row, &gamma, &beta, 1e-5)
            }
        }
    }
}

/// Deterministic non-trivial affine parameters for the norm benches.
fn norm_params(c: usize) -> (Vec<f64>, Vec<f64>) {
    let gamma = (0..c).map(|i| 0.5 + (i % 7) as f64 * 0.25).collect();
    let beta = (0..c).map(|i| -0.3 + (i % 5) as f64 * 0.15).collect();
    (gamma, beta)
}

/// Error statistics of `got` against `want`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrorStats {
    pub max_abs: f64,
    /// Max of |err| / |want| over points with |want| >= 2^-10.
    pub max_rel: f64,
    pub mse: f64,
}

impl ErrorStats {
    pub fn of(got: &[f64], want: &[f64]) -> ErrorStats {
        let mut s = ErrorStats::default();
        for (g, w) in got.iter().zip(want) {
            let e = (g - w).abs();
            s.max_abs = s.max_abs.max(e);
            if w.abs() >= 1.0 / 1024.0 {
                s.max_rel = s.max_rel.max(e / w.abs());
            }
            s.mse += e * e;
        }
        s.mse /= got.len().max(1) as f64;
        s
    }
}

/// A small deterministic generator (xorshift64*), so benches and tests need no RNG crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}
