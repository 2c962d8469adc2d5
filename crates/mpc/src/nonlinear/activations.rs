//! SiLU, Mish and GeLU (tanh form, as in SD, CLIP and `jax.nn.gelu`).
//!
//! Ours (SiLU `ours`, GeLU `piecewise_poly`) uses the symmetry of x*F(x) with F(x) + F(-x) = 1:
//!   act(x) = relu(x) - g(|x|),   g(t) = t F(-t),
//! and g decays fast, so act(x) = relu(x) - [t < T] p(t) with one polynomial p on [-1/8, T + 1/8].
//! With b = [x < 0], m = b x: relu(x) = x - m and t = x - 2m. The identity holds for either b
//! (relu and t flip together: -g(-x) = x F(x)), so the sign test only has to be right for
//! |x| >= 1/8 and both comparisons run on a few high bits (reduced width). Two comparisons and
//! two selects in all, against CipherDM's three full-width comparisons and three selects.
//!
//! Domain: |x| < `bound` (the caller's promise; 2^12 for activations after GroupNorm is ample).
//! Beyond T the result is exactly relu(x), which is the function to within g(T). Beyond
//! `bound`: undefined.
//!
//! | function | method | error (max abs, f = 18) | protocol calls | bytes/element (robust) |
//! |---|---|---|---|---|
//! | SiLU | ours | 1.5e-3 (fit 1.1e-3 on [0, 9], tail 1.2e-3) | 2 cmp (reduced), 2 select, 3 fma calls / 4 scaled jobs (degree 8 by powers) | 243.5 |
//! | SiLU | cipherdm | 7.5e-2 (Eq. 6 at x = 6) | 3 cmp (full), 3 select, 4 fma rounds / 5 jobs | 388.1 |
//! | Mish | cipherdm | 1.3e-1 (Eq. 7 at x = 6) | same as SiLU cipherdm | 388.1 |
//! | GeLU | piecewise_poly | 4.7e-3 (fit 3.7e-3 on [0, 3.5], tail 1e-3) | 2 cmp (reduced), 2 select, 2 fma calls / 2 scaled jobs (degree 4 by powers) | 168.5 |
//! | GeLU | pidm | sigmoid's 4e-4 times |x| | 3 fma rounds + sigmoid | 408.9 |
//!
//! (Bytes summed over the three parties with robust truncation, measured by `secdiff bench ops`
//! and equal to the statement of `cost`; the CipherDM rows are older fast-truncation figures;
//! SPU on this machine: SiLU 1832, GeLU 1108.) Rounds: about 17 (SiLU) and
//! 14 (GeLU) per party, dominated by the two comparisons' carry trees.
//!
//! Largest truncated products: ours |tau * h| <= 1 (tau in [-1, 1], Horner sums below 1);
//! CipherDM's x^2 * x^4 = 46656 at |x| = 6 (a truncation failure probability ~46656 * 2^-27 per
//! element with probabilistic truncation: the reason we do not default to it).

use super::ops::{Fma, FxpOps, Result, Threshold};
use super::poly::ScaledPoly;
use super::sigmoid::{fold_sign, masked_poly, sigmoid, SigmoidMethod};

super::methods! {
    /// How SiLU is approximated.
    SiluMethod, "silu", default Ours, {
        Ours => "ours",
        Cipherdm => "cipherdm",
    }
}

super::methods! {
    /// How Mish is approximated.
    MishMethod, "mish", default Cipherdm, {
        Cipherdm => "cipherdm",
    }
}

super::methods! {
    /// How GeLU (tanh form) is approximated.
    GeluMethod, "gelu", default PiecewisePoly, {
        PiecewisePoly => "piecewise_poly",
        Pidm => "pidm",
    }
}

/// g(t) = t sigmoid(-t) on [-1/8, 9 + 1/8], tau = (t - 4.5) / 4.5.
const SILU_G: ScaledPoly<'static> = ScaledPoly {
    center: 4.5,
    half_width: 4.5,
    coef: &[
        5.000_638_708_544_672e-2,
        -1.620_191_381_163_539_3e-1,
        2.413_017_599_839_438_8e-1,
        -3.188_566_031_567_183e-1,
        1.761_414_384_546_318_2e-1,
        5.441_958_000_077_519e-1,
        -7.101_652_387_755_717e-1,
        -6.322_047_771_361_905e-2,
        2.432_869_929_775_303e-1,
    ],
};
const SILU_CUT: f64 = 9.0;

/// g(t) = t sigmoid(-sqrt(8/pi) (t + 0.044715 t^3)) on [-1/8, 3.5 + 1/8], tau = (t - 1.75)/1.75.
const GELU_G: ScaledPoly<'static> = ScaledPoly {
    center: 1.75,
    half_width: 1.75,
    coef: &[
        7.300_767_621_591_14e-2,
        -2.090_003_021_203_734e-1,
        9.303_682_170_199_225e-2,
        2.081_206_605_945_870_2e-1,
        -1.632_874_305_241_003e-1,
    ],
};
const GELU_CUT: f64 = 3.5;

/// CipherDM Eq. 6 (SiLU) and Eq. 7 (Mish): F0 on [-6, -2) (x^0, x^1, x^2), F1 on [-2, 6]
/// (x^0, x^1, x^2, x^4, x^6).
const CIPHERDM_SILU: ([f64; 3], [f64; 5]) = (
    [-0.522_126_64, -0.169_103_63, -0.014_201_63],
    [
        0.034_538_21,
        0.493_794_32,
        0.197_845_96,
        -0.006_024_01,
        0.000_080_32,
    ],
);
const CIPHERDM_MISH: ([f64; 3], [f64; 5]) = (
    [-0.556_844_45, -0.183_755_35, -0.015_720_19],
    [
        0.075_592_42,
        0.549_020_50,
        0.201_525_83,
        -0.007_353_09,
        0.000_107_86,
    ],
);

/// relu(x) - [|x| < cut] p(|x|), the symmetric form (see the module doc).
fn folded<E: FxpOps>(e: &E, x: &E::A, p: &ScaledPoly<'_>, cut: f64, bound: f64) -> Result<E::A> {
    let (_, m, t) = fold_sign(e, x, bound)?;
    let relu = e.sub(x, &m)?;
    let g = masked_poly(e, &t, p, cut, bound)?;
    e.sub(&relu, &g)
}

/// CipherDM Algorithm 2 with the given (F0, F1).
fn cipherdm_piecewise<E: FxpOps>(e: &E, x: &E::A, c: &([f64; 3], [f64; 5])) -> Result<E::A> {
    let exact = |below: f64| Threshold {
        below,
        bound: f64::INFINITY,
        resolution: 0.0,
    };
    let nx = e.neg(x);
    let bits = e.less_than(&[(x, exact(-6.0)), (x, exact(-2.0)), (&nx, exact(-6.0))])?;
    let (b0, b1, b2) = (&bits[0], &bits[1], &bits[2]);
    let z0 = e.xor(b0, b1)?; // -6 <= x < -2
    let z1 = e.not(&e.xor(b1, b2)?); // -2 <= x <= 6
    let x2 = e.mul(x, x)?;
    let x4 = e.mul(&x2, &x2)?;
    let x6 = e.mul(&x2, &x4)?;
    let (f0, f1) = c;
    let polys = e.fma(&[
        Fma::affine(x, f0[1], f0[0]).plus(&x2, f0[2]),
        Fma::affine(x, f1[1], f1[0])
            .plus(&x2, f1[2])
            .plus(&x4, f1[3])
            .plus(&x6, f1[4]),
    ])?;
    let parts = e.select(&[(&z0, &polys[0]), (&z1, &polys[1]), (b2, x)])?;
    e.add(&e.add(&parts[0], &parts[1])?, &parts[2])
}

/// SiLU(x) = x sigmoid(x) for |x| < bound.
pub fn silu<E: FxpOps>(e: &E, x: &E::A, method: SiluMethod, bound: f64) -> Result<E::A> {
    match method {
        SiluMethod::Ours => folded(e, x, &SILU_G, SILU_CUT, bound),
        SiluMethod::Cipherdm => cipherdm_piecewise(e, x, &CIPHERDM_SILU),
    }
}

/// Mish(x) = x tanh(softplus(x)).
pub fn mish<E: FxpOps>(e: &E, x: &E::A, method: MishMethod, _bound: f64) -> Result<E::A> {
    match method {
        MishMethod::Cipherdm => cipherdm_piecewise(e, x, &CIPHERDM_MISH),
    }
}

/// GeLU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))), for |x| < bound.
pub fn gelu<E: FxpOps>(e: &E, x: &E::A, method: GeluMethod, bound: f64) -> Result<E::A> {
    match method {
        GeluMethod::PiecewisePoly => folded(e, x, &GELU_G, GELU_CUT, bound),
        GeluMethod::Pidm => {
            // PIDM: erf(y) ~ tanh(2/sqrt(pi) (y + 11/123 y^3)), so GeLU(x) = x sigmoid(z) with
            // z = sqrt(8/pi) (x + 0.044715 x^3) (11/246 = 0.044715). Computed on x/4 to keep
            // the cube small; z saturates the sigmoid long before its bound.
            let k = (8.0 / std::f64::consts::PI).sqrt();
            let q = e.affine(x, 0.25, 0.0)?;
            let q2 = e.mul(&q, &q)?;
            let q3 = e.mul(&q2, &q)?;
            let z = e
                .fma(&[Fma::affine(x, k, 0.0).plus(&q3, k * 0.044_715 * 64.0)])?
                .remove(0);
            let zb = k * (bound + 0.044_715 * bound.powi(3));
            let s = sigmoid(e, &z, SigmoidMethod::Ours, zb.min(2f64.powi(40)))?;
            e.mul(x, &s)
        }
    }
}

pub fn silu_exact(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

pub fn mish_exact(x: f64) -> f64 {
    x * x.exp().ln_1p().tanh()
}

pub fn gelu_exact(x: f64) -> f64 {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (k * (x + 0.044_715 * x * x * x)).tanh())
}

/// Twin helpers on f64 (rounded to the grid on entry).
pub fn silu_f64(x: &[f64], method: SiluMethod, frac_bits: u32) -> Result<Vec<f64>> {
    let tw = super::Twin::new(frac_bits);
    let b = super::exp::default_bound(x);
    Ok(tw.decode(&silu(&tw, &tw.encode(x), method, b)?))
}

pub fn mish_f64(x: &[f64], method: MishMethod, frac_bits: u32) -> Result<Vec<f64>> {
    let tw = super::Twin::new(frac_bits);
    let b = super::exp::default_bound(x);
    Ok(tw.decode(&mish(&tw, &tw.encode(x), method, b)?))
}

pub fn gelu_f64(x: &[f64], method: GeluMethod, frac_bits: u32) -> Result<Vec<f64>> {
    let tw = super::Twin::new(frac_bits);
    let b = super::exp::default_bound(x);
    Ok(tw.decode(&gelu(&tw, &tw.encode(x), method, b)?))
}
