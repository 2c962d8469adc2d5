//! sigmoid and tanh.
//!
//! Ours folds the sign: with b = [x < 0] and t = (1 - 2b) x = |x|,
//!   sigmoid(x) = r + (1 - b)(1 - 2r),   r = sigmoid(-t) for t < 8, 0 beyond,
//! where sigmoid(-t) is a degree-7 minimax polynomial on [-1/8, 8 + 1/8]. The identity holds for
//! either value of b, so the sign comparison only has to be right when |x| >= 1/8 and runs on a
//! few high bits (reduced width); so does the range comparison t < 8.
//!
//! Domain: |x| < `bound` (the caller's promise, e.g. 2^12 for activations). Saturates to exactly
//! 0 / 1 beyond |x| = 8 (+-1/8); the result stays in [-2.2e-4, 1 + 2.2e-4] (PIDM clamps to
//! [0, 1]; our error bound already keeps it within 2.2e-4 of that range, so we do not pay two
//! extra comparisons for the clamp). Max abs error 4e-4 (fit 2.1e-4, tail sigmoid(-7.875) =
//! 3.8e-4). Beyond `bound`: undefined.
//!
//! tanh(x) = 2 sigmoid(2x) - 1 (odd, saturates to +-1 beyond |x| = 4), max abs error 8e-4.
//!
//! Cost (sigmoid): 2 reduced-width comparisons, 3 selects, 8 fma rounds with 9 jobs: 285.5 bytes
//! per element over the three parties with fast truncation (tanh: 287.8), about 17 rounds.

use super::ops::{FxpOps, Result, Threshold};
use super::poly::ScaledPoly;

super::methods! {
    /// How sigmoid (and tanh) is approximated.
    SigmoidMethod, "sigmoid", default Ours, {
        Ours => "ours",
    }
}

/// Resolution of the sign and range comparisons.
pub(crate) const FOLD_RESOLUTION: f64 = 0.125;

/// sigmoid(-t) on t in [-1/8, 8 + 1/8], tau = (t - 4) / 4.
const SIGMOID_NEG: ScaledPoly<'static> = ScaledPoly {
    center: 4.0,
    half_width: 4.0,
    coef: &[
        1.818_385_402_394_119_6e-2,
        -7.003_547_150_414_924e-2,
        1.288_302_766_211_086_9e-1,
        -1.747_320_588_038_517_3e-1,
        1.877_138_394_931_252_8e-1,
        -6.697_680_754_448_046e-2,
        -8.449_878_806_870_093e-2,
        6.177_048_430_390_891e-2,
    ],
};
const SIGMOID_CUT: f64 = 8.0;

/// The sign fold shared by the symmetric functions: returns (b, m, t) with b = [x < 0] (exact
/// when |x| >= 1/8), m = b x and t = x - 2m = (1 - 2b) x.
/// Cost: 1 reduced-width comparison, 1 select.
pub(crate) fn fold_sign<E: FxpOps>(e: &E, x: &E::A, bound: f64) -> Result<(E::B, E::A, E::A)> {
    let b = e
        .less_than(&[(
            x,
            Threshold {
                below: 0.0,
                bound,
                resolution: FOLD_RESOLUTION,
            },
        )])?
        .remove(0);
    let m = e.select(&[(&b, x)])?.remove(0);
    let t = e.sub(x, &e.mul_int(&m, 2))?;
    Ok((b, m, t))
}

/// `p(t)` for `t < cut`, 0 beyond (t >= -1/8 and t < bound). Cost: 1 reduced-width comparison,
/// the polynomial, 1 select.
pub(crate) fn masked_poly<E: FxpOps>(
    e: &E,
    t: &E::A,
    p: &ScaledPoly<'_>,
    cut: f64,
    bound: f64,
) -> Result<E::A> {
    let inside = e
        .less_than(&[(
            t,
            Threshold {
                below: cut,
                bound: bound + cut,
                resolution: FOLD_RESOLUTION,
            },
        )])?
        .remove(0);
    let v = p.eval(e, t)?;
    let drop = e.select(&[(&e.not(&inside), &v)])?.remove(0);
    e.sub(&v, &drop)
}

/// sigmoid(x) for |x| < bound.
pub fn sigmoid<E: FxpOps>(e: &E, x: &E::A, method: SigmoidMethod, bound: f64) -> Result<E::A> {
    match method {
        SigmoidMethod::Ours => {
            let (b, _, t) = fold_sign(e, x, bound)?;
            let r = masked_poly(e, &t, &SIGMOID_NEG, SIGMOID_CUT, bound)?;
            // sigmoid = r + (1 - b)(1 - 2r)
            let one_minus_2r = e.add_const(&e.mul_int(&r, -2), 1.0);
            let flip = e.select(&[(&e.not(&b), &one_minus_2r)])?.remove(0);
            e.add(&r, &flip)
        }
    }
}

/// tanh(x) = 2 sigmoid(2x) - 1 for |x| < bound.
pub fn tanh<E: FxpOps>(e: &E, x: &E::A, method: SigmoidMethod, bound: f64) -> Result<E::A> {
    let s = sigmoid(e, &e.mul_int(x, 2), method, 2.0 * bound)?;
    Ok(e.add_const(&e.mul_int(&s, 2), -1.0))
}

pub fn sigmoid_exact(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Twin helpers on f64 (rounded to the grid on entry).
pub fn sigmoid_f64(x: &[f64], method: SigmoidMethod, frac_bits: u32) -> Result<Vec<f64>> {
    let tw = super::Twin::new(frac_bits);
    let b = super::exp::default_bound(x);
    Ok(tw.decode(&sigmoid(&tw, &tw.encode(x), method, b)?))
}

pub fn tanh_f64(x: &[f64], method: SigmoidMethod, frac_bits: u32) -> Result<Vec<f64>> {
    let tw = super::Twin::new(frac_bits);
    let b = super::exp::default_bound(x);
    Ok(tw.decode(&tanh(&tw, &tw.encode(x), method, b)?))
}
