//! exp on non-positive inputs (the exponential that softmax, sigmoid and friends need), with
//! CipherDM's mask: inputs below -14 give exactly 0 (exp(-14) < 2^-18, one ulp at f = 18).
//!
//! Domain: `x` in `[-bound, 0]` (`bound` is the caller's promise on |x|; it sizes the mask's
//! reduced-width comparison). Below -14 the result is 0. Small positive inputs up to +0.5 (what a
//! fuzzy max-subtraction can leave) are accurate for `RangeReduced`; larger positive inputs are
//! outside the domain (the result grows too slowly, never garbage up to +8). Inputs beyond
//! `bound` are undefined.
//!
//! Methods:
//! - `range_reduced` (ours, default): argument reduction by 4 and squaring twice:
//!   exp(x) = p(x/4)^4 with p a quartic, the minimax fit of max |p^4 - exp| on [-14.5, 0.5]
//!   (2.4e-4 in exact arithmetic; fixed-point rounding, amplified 4x by the squarings, adds a
//!   few 1e-6), the quartic evaluated by powers in two calls (`ScaledPoly::eval`). Four jobs:
//!   a fifth of the work less than the eighth power (error 5.3e-5) it replaced, for an error
//!   still a sixth of the bound and of SPU's (1.4e-3).
//! - `range_reduced_fine`: exp(x) = p(x/8)^8 with a quintic (three scaled jobs, three
//!   squarings): abs error ~1e-5 and relative error below 5e-4 near the top, for softmax.
//! - `cipherdm_chebyshev`: CipherDM Table 3 (degree-7 Chebyshev in t = x/7 + 1), powers in
//!   3 rounds, mask by an exact full-width comparison. The paper's coefficients sum to 0.9515 at
//!   x = 0, so its max abs error is 4.8e-2 (reproduced, not fixed).
//! - `crypten_limit`: CrypTen's (1 + x/2^8)^(2^8), eight squarings, with our mask added (CrypTen
//!   has none, and without it inputs below -512 give garbage). Max abs error ~2e-3.
//!
//! Cost (protocol calls; `cost` turns them into bytes and rounds):
//! - range_reduced: 1 reduced-width comparison (resolution 1/2), 4 fma calls (the quartic's
//!   two jobs, always robust: tau^2 = x^2 / 16 as a plain square truncated by f + 4 bits, 26.75
//!   bytes per element, and the scaled job at 28.5; then two squarings at 26.25), 1 select:
//!   157.5 bytes per element with robust truncation at the bench's bound of 2^15 (a 19-bit
//!   comparison), 144 with fast (SPU: 444). Largest truncated product: tau^4 <= 173 (scaled
//!   job, limit 256), p^2 <= 1.27.
//! - range_reduced_fine: the same with three scaled jobs and three squarings.
//! - cipherdm_chebyshev: 1 full-width comparison, 1 + 3 + 1 fma rounds with 1 + 6 + 1 jobs,
//!   1 select. Largest truncated product: |t|^7 <= 1 (times |coef| <= 0.67 in the sum).
//! - crypten_limit: 1 reduced-width comparison, 9 fma rounds with 9 jobs, 1 select.

use super::ops::{Fma, FxpOps, Result, Threshold};
use super::poly::{powers, ScaledPoly};

super::methods! {
    /// How exp is approximated.
    ExpMethod, "exp", default RangeReduced, {
        RangeReduced => "range_reduced",
        RangeReducedFine => "range_reduced_fine",
        CipherdmChebyshev => "cipherdm_chebyshev",
        CryptenLimit => "crypten_limit",
    }
}

/// Below this, exp is masked to 0 (CipherDM's T_exp).
pub const EXP_CUTOFF: f64 = -14.0;

/// Resolution of the mask's comparison: inputs within 1/2 of the cutoff may go either way. Below
/// the cutoff that leaves x in (-14.5, -14) to the polynomial, whose fit covers [-14.5, 0.5]
/// (error at most 2.4e-4 there, 6e-9 for the fine method); above it a masked x >= -13.5 loses
/// exp(x) <= 1.4e-6. A coarser resolution would leave the fit's range. Against 1/8 it drops
/// two low bits more: one carry-tree level (a round) and two bit planes less at SPU's inputs.
pub const MASK_RESOLUTION: f64 = 0.5;

/// exp(tau) on tau = x/4 in [-3.625, 0.125] (x in [-14.5, 0.5]): the minimax fit of
/// max |p^4 - exp(x)| over x (`scripts/fit/exp_root.py --absolute --power 4 --lo -14.5 --hi 0.5
/// --center 0 --half-width 4`), 2.39e-4 in exact arithmetic. Relative error 4.8e-3 at most
/// above x = -3, 1.7e-2 above -5, but up to 24% where exp(x) is ~1e-3 (the same absolute error
/// on a small value; no quartic root gets both: weighting the fit towards relative error costs
/// 5e-3 of absolute error). Callers that need relative accuracy (softmax) use the fine method.
const RANGE_REDUCED: ScaledPoly<'static> = ScaledPoly {
    center: 0.0,
    half_width: 4.0,
    coef: &[
        1.000_047_528_004_758,
        1.000_394_270_723_608_6,
        4.944_339_865_295_957e-1,
        1.436_862_155_701_883_7e-1,
        1.794_163_642_191_614e-2,
    ],
};
/// Squarings after `RANGE_REDUCED`: exp(x) = p(x / 4)^4.
const SQUARINGS: usize = 2;
/// The same reduction with a quintic (one scaled job more): max |p^8 - exp(x)| = 1.5e-6 in exact
/// arithmetic, relative error below 5e-4 on [-8, 0]. Softmax uses it: a softmax entry's error is
/// the exp's *relative* error times the entry, and rows of a few hundred scores are dominated by
/// entries within a few units of the maximum.
const RANGE_REDUCED_FINE: ScaledPoly<'static> = ScaledPoly {
    center: 0.0,
    half_width: 8.0,
    coef: &[
        1.000_000_080_381_408_4,
        1.000_004_983_699_975_8,
        4.999_414_632_984_534_6e-1,
        1.657_165_935_440_839_4e-1,
        3.860_082_603_263_529_5e-2,
        4.944_936_495_560_249_6e-3,
    ],
};
/// Squarings after `RANGE_REDUCED_FINE`: exp(x) = p(x / 8)^8.
const SQUARINGS_FINE: usize = 3;
/// CipherDM Table 3 (Chebyshev coefficients C_0..C_7 on t in [-1, 1]) converted to monomials
/// in t: sum_k MONO[k] t^k == sum_j C_j T_j(t).
const CIPHERDM_CHEBYSHEV: [f64; 8] = [
    0.140_218_78,
    0.275_412_78,
    0.221_228_65,
    0.149_342_21,
    0.090_773_60,
    0.043_696_14,
    0.020_878_68,
    0.009_965_35,
];

/// Monomial coefficients of sum_j c_j T_j(t).
fn chebyshev_to_monomial(c: &[f64]) -> Vec<f64> {
    // T_0 = 1, T_1 = t, T_{n+1} = 2 t T_n - T_{n-1}, as coefficient vectors.
    let n = c.len();
    let mut out = vec![0.0; n];
    let mut prev = vec![0.0; n];
    let mut cur = vec![0.0; n];
    prev[0] = 1.0;
    if n > 1 {
        cur[1] = 1.0;
    }
    for (j, cj) in c.iter().enumerate() {
        let tj = if j == 0 { &prev } else { &cur };
        for k in 0..n {
            out[k] += cj * tj[k];
        }
        if j >= 1 && j + 1 < n {
            let mut next = vec![0.0; n];
            for k in 0..n - 1 {
                next[k + 1] += 2.0 * cur[k];
            }
            for k in 0..n {
                next[k] -= prev[k];
            }
            prev = std::mem::replace(&mut cur, next);
        }
    }
    out
}

/// The reference the methods approximate, in f64: exp(x), masked to 0 below the cutoff.
pub fn exact(x: f64) -> f64 {
    if x < EXP_CUTOFF {
        0.0
    } else {
        x.exp()
    }
}

/// exp(x) for `x <= 0` with inputs below -14 mapped to 0; `bound` >= max |x| (e.g. 2^15 for
/// attention scores with a -1e4 additive mask).
pub fn exp_neg<E: FxpOps>(e: &E, x: &E::A, method: ExpMethod, bound: f64) -> Result<E::A> {
    let y = match method {
        ExpMethod::RangeReduced | ExpMethod::RangeReducedFine => {
            let (poly, squarings) = if method == ExpMethod::RangeReduced {
                (&RANGE_REDUCED, SQUARINGS)
            } else {
                (&RANGE_REDUCED_FINE, SQUARINGS_FINE)
            };
            let mut p = poly.eval(e, x)?;
            for _ in 0..squarings {
                p = e.mul(&p, &p)?;
            }
            p
        }
        ExpMethod::CipherdmChebyshev => {
            let mono = chebyshev_to_monomial(&CIPHERDM_CHEBYSHEV);
            // t = -2 (x - T) / T - 1 = x/7 + 1 maps [-14, 0] to [-1, 1].
            let t = e.affine(x, -2.0 / EXP_CUTOFF, 1.0)?;
            let pw = powers(e, &t, 7)?;
            let mut job = Fma {
                products: vec![],
                scaled: vec![],
                linear: vec![],
                constant: mono[0],
                extra_shift: 0,
                robust: false,
            };
            for (k, p) in pw.iter().enumerate() {
                job = job.plus(p, mono[k + 1]);
            }
            e.fma(&[job])?.remove(0)
        }
        ExpMethod::CryptenLimit => {
            let mut u = e.affine(x, 1.0 / 256.0, 1.0)?;
            for _ in 0..8 {
                u = e.mul(&u, &u)?;
            }
            u
        }
    };
    let resolution = match method {
        ExpMethod::CipherdmChebyshev => 0.0,
        _ => MASK_RESOLUTION,
    };
    let masked = e.less_than(&[(
        x,
        Threshold {
            below: EXP_CUTOFF,
            bound: bound + EXP_CUTOFF.abs(),
            resolution,
        },
    )])?;
    // y where x is not below the cutoff, else 0: the multiplexer on the negated bit (local)
    // gives it directly, with no subtraction pass after it.
    let keep = e.not(&masked[0]);
    Ok(e.select(&[(&keep, &y)])?.remove(0))
}

/// The twin on f64 values (rounded to the grid on entry): what the `Approx` backend calls.
pub fn exp_neg_f64(x: &[f64], method: ExpMethod, frac_bits: u32) -> Result<Vec<f64>> {
    let tw = super::Twin::new(frac_bits);
    let y = exp_neg(&tw, &tw.encode(x), method, default_bound(x))?;
    Ok(tw.decode(&y))
}

/// The bound used when the caller gives none: the largest |x| rounded up to a power of two,
/// at least 2^4.
pub(crate) fn default_bound(x: &[f64]) -> f64 {
    let m = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    m.max(16.0).log2().ceil().exp2()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chebyshev_conversion_matches_recurrence() {
        let mono = chebyshev_to_monomial(&CIPHERDM_CHEBYSHEV);
        for i in 0..=20 {
            let t = -1.0 + i as f64 * 0.1;
            let (mut a, mut b) = (1.0, t);
            let mut cheb = CIPHERDM_CHEBYSHEV[0] + CIPHERDM_CHEBYSHEV[1] * t;
            for c in &CIPHERDM_CHEBYSHEV[2..] {
                let next = 2.0 * t * b - a;
                cheb += c * next;
                (a, b) = (b, next);
            }
            let m: f64 = mono.iter().rev().fold(0.0, |s, c| s * t + c);
            assert!((m - cheb).abs() < 1e-12, "t={t}: {m} vs {cheb}");
        }
    }
}
