//! Softmax over rows (the last axis), with an optional public additive mask (causal attention).
//!
//! All methods subtract the row maximum, exponentiate (exp masked to 0 below -14), sum, take one
//! reciprocal per row and multiply (CipherDM Algorithm 1, after Puma: a multiplication instead of
//! a division). They differ in the pieces:
//! - `ours` (default): max by a tree of reduced-width comparisons (resolution 2^-6: the max may be
//!   undershot by at most log2(n)/64, which our exp tolerates), our range-reduced exp (quintic
//!   form, for its small relative error) with a
//!   reduced-width mask, our normalised reciprocal.
//! - `cipherdm`: exact full-width comparisons in the max tree and the mask, CipherDM's Chebyshev
//!   exp (Table 3), reciprocal by normalisation (SPU's, which CipherDM ran on).
//! - `cipherdm_sqrtn`: as `cipherdm`, plus PIDM's division of the exponentials by sqrt(n) before
//!   the sum and reciprocal (PIDM Section 3.1), which keeps the reciprocal's input in
//!   [n^-1/2, n^1/2].
//!
//! Domain: |x| < `bound` (e.g. 2^15 for scores plus a -1e4 mask). Masked entries (x - max below
//! -14) get exp = 0 exactly, and 0 within the final product's rounding (1 ulp). Any row length
//! works (rows of 4096, 196, 49 are tested). Error (ours): 2e-4 max abs on rows of 4096
//! N(0, 2^2); on short rows, where one entry can carry most of the mass, at most 1e-3 relative
//! to the entry (the exp's and reciprocal's relative errors add up).
//!
//! Cost per row of n (ours): ceil(log2 n) levels of (1 reduced comparison + 1 select) on
//! n - 1 elements in all; exp on n (1 comparison, 7 fma rounds, 1 select); 1 reciprocal; 1 fma
//! round on n. Rows of 4096 with fast truncation: 297 bytes per element over the three parties
//! (77 MB for SPU's 64 x 4096 benchmark, SPU: 525 MB), about 109 rounds (the max tree's 12 levels
//! dominate); cipherdm 324, cipherdm_sqrtn 332.

use super::exp::{exp_neg, ExpMethod, EXP_CUTOFF};
use super::ops::{Fma, FxpOps, Result, Threshold};
use super::reciprocal::{reciprocal, Pow2Range, ReciprocalMethod};
use super::NonlinearError;

super::methods! {
    /// How softmax is computed.
    SoftmaxMethod, "softmax", default Ours, {
        Ours => "ours",
        Cipherdm => "cipherdm",
        CipherdmSqrtn => "cipherdm_sqrtn",
    }
}

/// Resolution of our max tree's comparisons.
const MAX_RESOLUTION: f64 = 1.0 / 64.0;

/// Row maxima of `x` (rows of `n`) by a comparison tree: ceil(log2 n) rounds of comparisons and
/// selects on n/2, n/4, ... elements per row. With `resolution > 0` each level may pick the
/// smaller of two values closer than `resolution`.
pub fn row_max<E: FxpOps>(e: &E, x: &E::A, n: usize, bound: f64, resolution: f64) -> Result<E::A> {
    let len = e.len(x);
    if n == 0 || len % n != 0 {
        return Err(NonlinearError::Shape {
            op: "row_max",
            detail: format!("length {len} is not a multiple of the row length {n}"),
        });
    }
    let rows = len / n;
    let mut cur = x.clone();
    let mut width = n;
    while width > 1 {
        let half = width / 2;
        let (mut li, mut ri, mut carry) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rows {
            for k in 0..half {
                li.push(r * width + 2 * k);
                ri.push(r * width + 2 * k + 1);
            }
            if width % 2 == 1 {
                carry.push(r * width + width - 1);
            }
        }
        let l = e.gather(&cur, &li)?;
        let rr = e.gather(&cur, &ri)?;
        let diff = e.sub(&l, &rr)?; // l - r
        let l_smaller = e
            .less_than(&[(
                &diff,
                Threshold {
                    below: 0.0,
                    bound: 2.0 * bound,
                    resolution,
                },
            )])?
            .remove(0);
        // max = l + [l < r] (r - l)
        let step = e.select(&[(&l_smaller, &e.neg(&diff))])?.remove(0);
        let m = e.add(&l, &step)?;
        // Reassemble rows: the `half` maxima then the carried odd element.
        let next_width = half + width % 2;
        cur = if width % 2 == 1 {
            let c = e.gather(&cur, &carry)?;
            let mut order = Vec::with_capacity(rows * next_width);
            for r in 0..rows {
                for k in 0..half {
                    order.push(r * half + k);
                }
                order.push(rows * half + r);
            }
            let both = e.concat(&[&m, &c]);
            e.gather(&both, &order)?
        } else {
            m
        };
        width = next_width;
    }
    Ok(cur)
}

/// Softmax over rows of `n` of `x + mask` (mask: public, one value per element of a row block
/// that repeats, e.g. an (l, s) causal mask for a (batch, l, s) tensor; or None).
pub fn softmax<E: FxpOps>(
    e: &E,
    x: &E::A,
    n: usize,
    mask: Option<&[f64]>,
    method: SoftmaxMethod,
    bound: f64,
) -> Result<E::A> {
    let len = e.len(x);
    if n == 0 || len % n != 0 {
        return Err(NonlinearError::Shape {
            op: "softmax",
            detail: format!("length {len} is not a multiple of the row length {n}"),
        });
    }
    let x = match mask {
        None => x.clone(),
        Some(m) => {
            if m.is_empty() || len % m.len() != 0 || m.len() % n != 0 {
                return Err(NonlinearError::Shape {
                    op: "softmax",
                    detail: format!("mask of {} values for {len} scores in rows of {n}", m.len()),
                });
            }
            let full: Vec<f64> = m.iter().copied().cycle().take(len).collect();
            e.add(x, &e.public(&full))?
        }
    };
    let (resolution, exp_method) = match method {
        SoftmaxMethod::Ours => (MAX_RESOLUTION, ExpMethod::RangeReducedFine),
        _ => (0.0, ExpMethod::CipherdmChebyshev),
    };
    let max = row_max(e, &x, n, bound, resolution)?;
    let shifted = e.sub(&x, &e.repeat_each(&max, n))?;
    let ex = exp_neg(e, &shifted, exp_method, 2.0 * bound)?;
    let (ex, sum_range) = if method == SoftmaxMethod::CipherdmSqrtn {
        let r = (n as f64).sqrt();
        let scaled = e.affine(&ex, 1.0 / r, 0.0)?;
        (scaled, Pow2Range::covering(0.5 / r, 1.5 * r))
    } else {
        (ex, Pow2Range::covering(0.5, 1.5 * n as f64))
    };
    let sums = e.run_sums(&ex, n)?;
    let inv = reciprocal(e, &sums, ReciprocalMethod::Ours, sum_range)?;
    let out = e.fma(&[Fma::mul(&ex, &e.repeat_each(&inv, n))])?;
    Ok(out.into_iter().next().unwrap_or_else(|| e.public(&[])))
}

/// Exact softmax of rows (f64), with masked entries below the exp cutoff giving 0 as the secure
/// versions do.
pub fn softmax_exact(x: &[f64], n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(n) {
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let ex: Vec<f64> = row
            .iter()
            .map(|&v| {
                if v - m < EXP_CUTOFF {
                    0.0
                } else {
                    (v - m).exp()
                }
            })
            .collect();
        let s: f64 = ex.iter().sum();
        out.extend(ex.iter().map(|v| v / s));
    }
    out
}

/// Twin helper on f64 (rounded to the grid on entry).
pub fn softmax_f64(
    x: &[f64],
    n: usize,
    mask: Option<&[f64]>,
    method: SoftmaxMethod,
    frac_bits: u32,
) -> Result<Vec<f64>> {
    let tw = super::Twin::new(frac_bits);
    let b = super::exp::default_bound(x).max(mask.map_or(0.0, super::exp::default_bound));
    Ok(tw.decode(&softmax(&tw, &tw.encode(x), n, mask, method, b)?))
}
