//! GroupNorm (NCHW) and LayerNorm (last axis).
//!
//! Both normalise runs of consecutive elements (a GroupNorm group is the contiguous block of
//! C/G channels of one sample; a LayerNorm run is one row), then apply a per-channel (GroupNorm)
//! or per-position (LayerNorm) affine map whose gamma and beta may be public or secret.
//!
//! Methods:
//! - `fused` (ours, default): the sum of squares is a dot product per block of at most 64
//!   elements, truncated once per block and kept with 2^10 extra fraction bits, so the
//!   variance costs no per-element truncation and stays precise down to 1e-4; rsqrt (ours,
//!   wide range) runs once per run; GroupNorm folds gamma into the per-channel factor, so the
//!   only per-element protocol is the final multiply (LayerNorm: two, gamma varies per element).
//! - `plain`: per-element squares truncated to f bits, then the same rsqrt and affine map.
//! - `pidm_scaled`: PIDM Appendix A.1: the input is first divided by d (GroupNorm
//!   d = max(sqrt(64*64*30 / (C/G)), 1), LayerNorm d = 8), then `plain`. Kept for the ablation:
//!   with our wide-range rsqrt the division only loses precision (small variances).
//!
//! Domain: variances (plus eps) in [1e-4, 1e6] (`fused`: down to 1e-7); runs of any length; per-block sums of squares
//! below 2^27 / 64 (|x - mean| < 181 in `fused`, < 2^13.5 in `plain`). eps below one ulp
//! (2^-18) rounds to 0 at f = 18 (the `fused` method keeps 10 more bits, so eps = 1e-6 counts).
//!
//! Cost per element: `fused` GroupNorm 1 fma job, LayerNorm 2; `plain` 2 / 3; `pidm_scaled`
//! 3 / 4. Per run: 1 dot product (fused) or nothing, 2 fma jobs, 1 rsqrt. Measured with fast
//! truncation (bytes per element over the three parties): GroupNorm on 64 channels of 32 x 32 in
//! 8 groups: fused 24.6, plain 48.2, pidm_scaled 56.2; LayerNorm on rows of 768: 49.5 / 68.4 /
//! 76.4.

use super::ops::{Coef, Fma, FxpOps, Result};
use super::reciprocal::{rsqrt_scaled, Pow2Range};
use super::NonlinearError;

super::methods! {
    /// How GroupNorm and LayerNorm compute their statistics.
    NormMethod, "norm", default Fused, {
        Fused => "fused",
        Plain => "plain",
        PidmScaled => "pidm_scaled",
    }
}

/// The affine map after normalisation.
#[derive(Clone, Copy, Debug)]
pub enum NormAffine<'a, A> {
    /// gamma = 1, beta = 0.
    None,
    Public {
        gamma: &'a [f64],
        beta: &'a [f64],
    },
    Shared {
        gamma: &'a A,
        beta: &'a A,
    },
}

/// Extra fraction bits of the variance in `fused`.
const VAR_EXTRA_BITS: i32 = 10;
/// Extra fraction bits of the per-channel factor in `fused`.
const FACTOR_EXTRA_BITS: i32 = 4;
/// Largest block of one truncated dot product in `fused`.
const DOT_BLOCK: usize = 64;

/// PIDM's GroupNorm scaling factor for `channels_per_group` channels per group (LDM U-Net).
pub fn pidm_group_norm_d(channels_per_group: usize) -> f64 {
    ((64.0 * 64.0 * 30.0) / channels_per_group as f64)
        .sqrt()
        .max(1.0)
}

/// PIDM's LayerNorm scaling factor (text encoder).
pub const PIDM_LAYER_NORM_D: f64 = 8.0;

/// Per-run statistics: the centred input and, per run, the factor 1/sqrt(var + eps) * 2^extra
/// (returned with its `extra` bits).
fn centred_and_factor<E: FxpOps>(
    e: &E,
    x: &E::A,
    run: usize,
    eps: f64,
    method: NormMethod,
) -> Result<(E::A, E::A, i32)> {
    let n = e.len(x);
    if run == 0 || n % run != 0 {
        return Err(NonlinearError::Shape {
            op: "norm",
            detail: format!("{n} elements do not split into runs of {run}"),
        });
    }
    // 1/run as 2^a/run with extra shift a keeps the coefficient precise for long runs.
    let a = (run as f64).log2().floor() as i32;
    let inv_run = (a as f64).exp2() / run as f64;
    let mean = e
        .fma(&[Fma {
            products: vec![],
            scaled: vec![],
            linear: vec![(&e.run_sums(x, run)?, Coef::Scalar(inv_run))],
            constant: 0.0,
            extra_shift: a,
            robust: false,
        }])?
        .remove(0);
    let xc = e.sub(x, &e.repeat_each(&mean, run))?;
    let f = e.frac_bits() as i32;
    match method {
        NormMethod::Fused => {
            let block = (1..=DOT_BLOCK.min(run))
                .rev()
                .find(|b| run.is_multiple_of(*b))
                .unwrap_or(1);
            // Block sums of squares with VAR_EXTRA_BITS extra bits, divided by 2^a.
            let shift = f + a - VAR_EXTRA_BITS;
            if shift < 0 {
                return Err(NonlinearError::Range {
                    op: "norm",
                    detail: format!("runs of {run} are too long for {f} fraction bits"),
                });
            }
            let sq = e.dot_runs(&xc, &xc, block, shift as u32)?;
            let v = e.run_sums(&sq, run / block)?;
            let k = VAR_EXTRA_BITS as f64;
            let var = e
                .fma(&[Fma::affine(&v, inv_run, eps * k.exp2())])?
                .remove(0);
            // var 2^K for var in [2^-14 - K, 2^20): the extra bits extend the range downwards.
            let range = Pow2Range {
                lo: Pow2Range::RSQRT.lo,
                hi: Pow2Range::RSQRT.hi + VAR_EXTRA_BITS,
            };
            // rsqrt(var 2^K) 2^(K/2 + P) = rsqrt(var) 2^P
            let r = rsqrt_scaled(e, &var, range, VAR_EXTRA_BITS / 2 + FACTOR_EXTRA_BITS)?;
            Ok((xc, r, FACTOR_EXTRA_BITS))
        }
        NormMethod::Plain | NormMethod::PidmScaled => {
            let sq = e.mul(&xc, &xc)?;
            let var = e
                .fma(&[Fma {
                    products: vec![],
                    scaled: vec![],
                    linear: vec![(&e.run_sums(&sq, run)?, Coef::Scalar(inv_run))],
                    constant: eps,
                    extra_shift: a,
                    robust: false,
                }])?
                .remove(0);
            let r = rsqrt_scaled(e, &var, Pow2Range::RSQRT, 0)?;
            Ok((xc, r, 0))
        }
    }
}

/// GroupNorm over an NCHW tensor `x` of shape `dims`.
pub fn group_norm<E: FxpOps>(
    e: &E,
    x: &E::A,
    dims: [usize; 4],
    groups: usize,
    affine: NormAffine<'_, E::A>,
    eps: f64,
    method: NormMethod,
) -> Result<E::A> {
    let [n, c, h, w] = dims;
    if groups == 0 || c % groups != 0 || e.len(x) != n * c * h * w {
        return Err(NonlinearError::Shape {
            op: "group_norm",
            detail: format!("{} elements, shape {dims:?}, {groups} groups", e.len(x)),
        });
    }
    let cpg = c / groups;
    let x = if method == NormMethod::PidmScaled {
        e.affine(x, 1.0 / pidm_group_norm_d(cpg), 0.0)?
    } else {
        x.clone()
    };
    let (xc, r, extra) = centred_and_factor(e, &x, cpg * h * w, eps, method)?;
    // Per (sample, channel) factor: r of its group, times gamma.
    let r_nc = e.repeat_each(&r, cpg);
    let (factor, beta) = match affine {
        NormAffine::None => (r_nc, None),
        NormAffine::Public { gamma, beta } => {
            check_len("group_norm gamma/beta", gamma.len(), beta.len(), c)?;
            let g: Vec<f64> = (0..n).flat_map(|_| gamma.iter().copied()).collect();
            let f = e
                .fma(&[Fma {
                    products: vec![],
                    scaled: vec![],
                    linear: vec![(&r_nc, Coef::PerElement(&g))],
                    constant: 0.0,
                    extra_shift: 0,
                    robust: false,
                }])?
                .remove(0);
            let b: Vec<f64> = (0..n)
                .flat_map(|_| beta.iter().flat_map(|&v| std::iter::repeat_n(v, h * w)))
                .collect();
            (f, Some(e.public(&b)))
        }
        NormAffine::Shared { gamma, beta } => {
            check_len("group_norm gamma/beta", e.len(gamma), e.len(beta), c)?;
            let tile: Vec<usize> = (0..n).flat_map(|_| 0..c).collect();
            let g = e.gather(gamma, &tile)?;
            let f = e.mul(&r_nc, &g)?;
            let b = e.repeat_each(&e.gather(beta, &tile)?, h * w);
            (f, Some(b))
        }
    };
    let out = e
        .fma(&[Fma {
            products: vec![(&xc, &e.repeat_each(&factor, h * w))],
            scaled: vec![],
            linear: vec![],
            constant: 0.0,
            extra_shift: extra,
            robust: false,
        }])?
        .remove(0);
    match beta {
        Some(b) => e.add(&out, &b),
        None => Ok(out),
    }
}

/// LayerNorm over the last axis (rows of `row`).
pub fn layer_norm<E: FxpOps>(
    e: &E,
    x: &E::A,
    row: usize,
    affine: NormAffine<'_, E::A>,
    eps: f64,
    method: NormMethod,
) -> Result<E::A> {
    let x = if method == NormMethod::PidmScaled {
        e.affine(x, 1.0 / PIDM_LAYER_NORM_D, 0.0)?
    } else {
        x.clone()
    };
    let (xc, r, extra) = centred_and_factor(e, &x, row, eps, method)?;
    let rows = e.len(&x) / row;
    let tile: Vec<usize> = (0..rows).flat_map(|_| 0..row).collect();
    // Apply gamma to the centred input (it varies along the normalised axis), then the factor.
    let (scaled, beta) = match affine {
        NormAffine::None => (xc, None),
        NormAffine::Public { gamma, beta } => {
            check_len("layer_norm gamma/beta", gamma.len(), beta.len(), row)?;
            let g: Vec<f64> = tile.iter().map(|&i| gamma[i]).collect();
            let b: Vec<f64> = tile.iter().map(|&i| beta[i]).collect();
            let s = e
                .fma(&[Fma {
                    products: vec![],
                    scaled: vec![],
                    linear: vec![(&xc, Coef::PerElement(&g))],
                    constant: 0.0,
                    extra_shift: 0,
                    robust: false,
                }])?
                .remove(0);
            (s, Some(e.public(&b)))
        }
        NormAffine::Shared { gamma, beta } => {
            check_len("layer_norm gamma/beta", e.len(gamma), e.len(beta), row)?;
            let s = e.mul(&xc, &e.gather(gamma, &tile)?)?;
            (s, Some(e.gather(beta, &tile)?))
        }
    };
    let out = e
        .fma(&[Fma {
            products: vec![(&scaled, &e.repeat_each(&r, row))],
            scaled: vec![],
            linear: vec![],
            constant: 0.0,
            extra_shift: extra,
            robust: false,
        }])?
        .remove(0);
    match beta {
        Some(b) => e.add(&out, &b),
        None => Ok(out),
    }
}

fn check_len(what: &'static str, a: usize, b: usize, want: usize) -> Result<()> {
    if a == want && b == want {
        Ok(())
    } else {
        Err(NonlinearError::Shape {
            op: what,
            detail: format!("lengths {a} and {b}, expected {want}"),
        })
    }
}

/// Exact GroupNorm (f64) for tests and error tables.
pub fn group_norm_exact(
    x: &[f64],
    dims: [usize; 4],
    groups: usize,
    gamma: &[f64],
    beta: &[f64],
    eps: f64,
) -> Vec<f64> {
    let [_, c, h, w] = dims;
    let run = c / groups * h * w;
    let mut out = Vec::with_capacity(x.len());
    for (gi, blk) in x.chunks(run).enumerate() {
        let mean = blk.iter().sum::<f64>() / run as f64;
        let var = blk.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / run as f64;
        let r = 1.0 / (var + eps).sqrt();
        for (i, v) in blk.iter().enumerate() {
            let ch = (gi % groups) * (c / groups) + i / (h * w);
            out.push((v - mean) * r * gamma[ch] + beta[ch]);
        }
    }
    out
}

/// Exact LayerNorm (f64).
pub fn layer_norm_exact(x: &[f64], row: usize, gamma: &[f64], beta: &[f64], eps: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for blk in x.chunks(row) {
        let mean = blk.iter().sum::<f64>() / row as f64;
        let var = blk.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / row as f64;
        let r = 1.0 / (var + eps).sqrt();
        for (i, v) in blk.iter().enumerate() {
            out.push((v - mean) * r * gamma[i] + beta[i]);
        }
    }
    out
}
