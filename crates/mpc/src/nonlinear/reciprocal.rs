//! Reciprocal and reciprocal square root of positive numbers over wide ranges.
//!
//! Ours normalises by a power of two found from the position of the most significant bit
//! (`FxpOps::pow2_scale`), so the polynomial and Newton step only ever see a mantissa in a fixed
//! interval, whatever the input's magnitude:
//! - reciprocal: s = 2^-e with m = x s in [1/2, 1); y0 = quadratic minimax of 1/m (rel. error
//!   1.0e-2), one Newton step y = y0 + y0 (1 - m y0) (rel. error 1e-4), result y s.
//! - rsqrt: s = 2^(-e/2), e even, with m = x s^2 in [1/4, 1); y = degree-8 near-minimax of
//!   m^-1/2 (rel. error 2.1e-5, evaluated by powers in 3 calls), result y s. (A cubic plus one
//!   Newton step, the earlier form, costs 17 bytes per element more for a larger error.)
//!
//! Domain (the `Pow2Range` argument, default below): reciprocal [2^-10, 2^14) (covers
//! [1e-3, 1e4]), rsqrt [2^-14, 2^20) (covers [1e-4, 1e6]). Error: at most 1e-3 relative or
//! 4 ulp, whichever is larger (tests check it over both ranges from the secure protocol).
//! Outside the range the normaliser saturates: inputs above the range get the scale of the top
//! of the range, so the result degrades gradually (Newton from a too-large guess); inputs below
//! it are treated as the bottom of the range. `x <= 0` is undefined.
//!
//! CrypTen's methods are kept as baselines (PIDM Figure 2): reciprocal y0 = 3 exp(1/2 - x) +
//! 0.003 then 10 Newton steps (fails above ~500); rsqrt y0 = 2.2 exp(-(x/2 + 0.2)) + 0.2 -
//! x/1024 then 3 Newton steps (fails above ~100). Their exp is CrypTen's limit (1 + x/256)^256.
//!
//! Cost (ours): reciprocal 1 pow2_scale + 5 fma calls; rsqrt 1 pow2_scale + 5 fma calls (3 of
//! them the polynomial's scaled jobs); the products by the scale (2 and 3 of them) always use
//! the robust truncation (see `mul_by_scale`). rsqrt with robust truncation: 381 bytes per
//! element over the three parties (SPU's: 1548); pow2_scale alone is a Brent-Kung A2B of hi + f
//! planes (about 63 bytes for rsqrt's 38), the OR-prefix (24) and the injection (about 58).
//! Largest truncated product otherwise: |m y0| <= 2 (reciprocal), tau^8 <= 1.1 (rsqrt).

use super::ops::{Fma, FxpOps, Result, POW2_GUARD_BITS};
use super::poly::ScaledPoly;

super::methods! {
    /// How 1/x is computed.
    ReciprocalMethod, "reciprocal", default Ours, {
        Ours => "ours",
        Crypten => "crypten",
    }
}

super::methods! {
    /// How 1/sqrt(x) is computed.
    RsqrtMethod, "rsqrt", default Ours, {
        Ours => "ours",
        Crypten => "crypten",
    }
}

/// Binary exponents [lo, hi) of the inputs a normalised method is exact for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pow2Range {
    pub lo: i32,
    pub hi: i32,
}

impl Pow2Range {
    /// [2^-10, 2^14): reciprocal's stated domain [1e-3, 1e4].
    pub const RECIPROCAL: Pow2Range = Pow2Range { lo: -10, hi: 14 };
    /// [2^-14, 2^20): rsqrt's stated domain [1e-4, 1e6].
    pub const RSQRT: Pow2Range = Pow2Range { lo: -14, hi: 20 };

    /// The smallest range covering [min, max] (both positive).
    pub fn covering(min: f64, max: f64) -> Pow2Range {
        Pow2Range {
            lo: min.log2().floor() as i32,
            hi: max.log2().floor() as i32 + 1,
        }
    }
}

/// 1/m on [1/2, 1], relative minimax.
const RECIP_INIT: ScaledPoly<'static> = ScaledPoly {
    center: 0.0,
    half_width: 1.0,
    coef: &[
        4.242_283_204_168_753_5,
        -5.817_896_538_866_687,
        2.585_729_451_245_873_3,
    ],
};

/// m^-1/2 on [0.249, 1.003] ([1/4, 1) with room for a scale one raw unit off), relative
/// near-minimax (Lawson's iteration), degree 8: relative error 2.1e-5, so no Newton step is
/// needed. Evaluated by powers: 4 scaled jobs in 3 calls.
const RSQRT_DIRECT: ScaledPoly<'static> = ScaledPoly {
    center: 0.625,
    half_width: 0.38,
    coef: &[
        1.264_918_132_468_734,
        -3.843_074_744_220_002e-1,
        1.749_903_324_851_110_6e-1,
        -9.173_842_295_286_182e-2,
        5.007_248_686_167_141_4e-2,
        -1.617_132_893_585_820_6e-2,
        6.988_004_015_825_375e-3,
        -1.912_326_529_660_182e-2,
        1.191_065_398_077_285_9e-2,
    ],
};

/// CrypTen's exp: (1 + x/256)^256.
fn crypten_exp<E: FxpOps>(e: &E, x: &E::A) -> Result<E::A> {
    let mut u = e.affine(x, 1.0 / 256.0, 1.0)?;
    for _ in 0..8 {
        u = e.mul(&u, &u)?;
    }
    Ok(u)
}

/// 1/x for x in `range` (positive).
pub fn reciprocal<E: FxpOps>(
    e: &E,
    x: &E::A,
    method: ReciprocalMethod,
    range: Pow2Range,
) -> Result<E::A> {
    match method {
        ReciprocalMethod::Ours => {
            let s = e.pow2_scale(x, 1, range.lo, range.hi)?;
            let m = mul_by_scale(e, x, &s, 0)?;
            let y0 = RECIP_INIT.eval(e, &m)?;
            // Newton: y = y0 + y0 (1 - m y0).
            let err = e
                .fma(&[Fma::mul(&e.neg(&m), &y0).plus_const(1.0)])?
                .remove(0);
            let y = e.fma(&[Fma::mul(&y0, &err).plus(&y0, 1.0)])?.remove(0);
            mul_by_scale(e, &y, &s, 0)
        }
        ReciprocalMethod::Crypten => {
            let arg = e.add_const(&e.neg(x), 0.5);
            let ex = crypten_exp(e, &arg)?;
            let mut y = e.affine(&ex, 3.0, 0.003)?;
            for _ in 0..10 {
                // y = 2y - x y^2
                let y2 = e.mul(&y, &y)?;
                y = e.fma(&[Fma::mul(&e.neg(x), &y2).plus(&y, 2.0)])?.remove(0);
            }
            Ok(y)
        }
    }
}

/// Ours, returning 1/sqrt(x) * 2^out_bits (the last product keeps `out_bits` more bits, for
/// callers that need the factor precise when it is small, as the norms do).
pub(crate) fn rsqrt_scaled<E: FxpOps>(
    e: &E,
    x: &E::A,
    range: Pow2Range,
    out_bits: i32,
) -> Result<E::A> {
    let s = e.pow2_scale(x, 2, range.lo, range.hi)?;
    // x s keeps XS_EXTRA_BITS more fraction bits: at the bottom of the range it is only
    // m 2^(e/2) (1/128 for x = 1e-4), where a truncation's ulp would be a relative 4e-4.
    let xs = mul_by_scale(e, x, &s, XS_EXTRA_BITS)?;
    let m = mul_by_scale(e, &xs, &s, -XS_EXTRA_BITS)?;
    let y = RSQRT_DIRECT.eval(e, &m)?;
    mul_by_scale(e, &y, &s, out_bits)
}

/// 1/sqrt(x) for x in `range` (positive).
pub fn rsqrt<E: FxpOps>(e: &E, x: &E::A, method: RsqrtMethod, range: Pow2Range) -> Result<E::A> {
    match method {
        RsqrtMethod::Ours => rsqrt_scaled(e, x, range, 0),
        RsqrtMethod::Crypten => {
            // y0 = 2.2 exp(-(x/2 + 0.2)) + 0.2 - x/1024
            let arg = e.add_const(&e.affine(x, -0.5, 0.0)?, -0.2);
            let ex = crypten_exp(e, &arg)?;
            let mut y = e
                .fma(&[Fma::affine(&ex, 2.2, 0.2).plus(x, -1.0 / 1024.0)])?
                .remove(0);
            for _ in 0..3 {
                y = newton_rsqrt(e, x, &y)?;
            }
            Ok(y)
        }
    }
}

/// Extra fraction bits of rsqrt's intermediate x s (half the scale's guard bits: inputs up to
/// 2^(hi + 14) still keep the second product below 2^62).
const XS_EXTRA_BITS: i32 = 4;

/// `a * s * 2^out_bits` for a scale from `pow2_scale` (which carries POW2_GUARD_BITS). Always
/// truncated robustly: with the guard bits the un-truncated product is |a s| 2^(2f + 8), up to
/// 2^54 for a reciprocal of 1000, where a fast truncation would fail every ~2^10 elements.
fn mul_by_scale<E: FxpOps>(e: &E, a: &E::A, s: &E::A, out_bits: i32) -> Result<E::A> {
    let mut job = Fma::mul(a, s).robust();
    job.extra_shift = POW2_GUARD_BITS - out_bits;
    Ok(e.fma(&[job])?.remove(0))
}

/// One Newton step for m^-1/2: y (3/2 - m y^2 / 2). Three fma rounds.
fn newton_rsqrt<E: FxpOps>(e: &E, m: &E::A, y: &E::A) -> Result<E::A> {
    let y2 = e.mul(y, y)?;
    let mut half = Fma::mul(m, &y2);
    half.extra_shift = 1;
    let half_my2 = e.fma(&[half])?.remove(0);
    Ok(e.fma(&[Fma::mul(y, &e.neg(&half_my2)).plus(y, 1.5)])?
        .remove(0))
}

/// Twin helpers on f64 (rounded to the grid on entry).
pub fn reciprocal_f64(
    x: &[f64],
    method: ReciprocalMethod,
    range: Pow2Range,
    frac_bits: u32,
) -> Result<Vec<f64>> {
    let tw = super::Twin::new(frac_bits);
    Ok(tw.decode(&reciprocal(&tw, &tw.encode(x), method, range)?))
}

pub fn rsqrt_f64(
    x: &[f64],
    method: RsqrtMethod,
    range: Pow2Range,
    frac_bits: u32,
) -> Result<Vec<f64>> {
    let tw = super::Twin::new(frac_bits);
    Ok(tw.decode(&rsqrt(&tw, &tw.encode(x), method, range)?))
}
