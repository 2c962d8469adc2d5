//! Polynomial evaluation on fixed-point tensors, shared by the nonlinear kernels.
//!
//! Polynomials are always evaluated on a scaled variable `tau = (t - center) / half_width` that
//! lies in about [-1, 1] on the function's domain, so every product the truncation sees stays
//! small (a truncation's failure probability grows with the magnitude of the product it
//! truncates). Horner form: one fused multiply-add per degree after the first.

use super::ops::{Fma, FxpOps, Result};

/// A polynomial `sum_k coef[k] * tau^k` in `tau = (t - center) / half_width`.
#[derive(Clone, Copy, Debug)]
pub struct ScaledPoly<'a> {
    pub center: f64,
    pub half_width: f64,
    pub coef: &'a [f64],
}

impl ScaledPoly<'_> {
    /// Exact (f64) value, for tests and error tables.
    pub fn eval_f64(&self, t: f64) -> f64 {
        let tau = (t - self.center) / self.half_width;
        self.coef.iter().rev().fold(0.0, |acc, c| acc * tau + c)
    }

    /// Degree (>= 1).
    pub fn degree(&self) -> usize {
        self.coef.len() - 1
    }

    /// Evaluates on `t` with Horner's rule.
    ///
    /// When tau = t (`center` 0, `half_width` 1) it is not formed. Otherwise the first round
    /// computes tau and `coef[d] tau + coef[d-1]` as two jobs of one batch (both linear, so they
    /// cost a truncation each, a third of a product): `degree + 1` jobs in `degree` rounds, and
    /// every truncated product is `|tau h|`. (Folding the scale into the truncation instead
    /// would save that cheap job but make the products 1/scale times larger, and a fast
    /// truncation's failure probability grows with the product.)
    pub fn eval<E: FxpOps>(&self, e: &E, t: &E::A) -> Result<E::A> {
        let d = self.degree();
        let inv = 1.0 / self.half_width;
        let shift = -self.center * inv;
        let first_step = Fma::affine(
            t,
            self.coef[d] * inv,
            self.coef[d - 1] + self.coef[d] * shift,
        );
        if self.center == 0.0 && self.half_width == 1.0 {
            let mut h = e.fma(&[first_step])?.remove(0);
            for c in self.coef[..d - 1].iter().rev() {
                h = e.fma(&[Fma::mul(t, &h).plus_const(*c)])?.remove(0);
            }
            return Ok(h);
        }
        let mut first = e.fma(&[Fma::affine(t, inv, shift), first_step])?;
        let mut h = first.remove(1);
        let tau = first.remove(0);
        for c in self.coef[..d - 1].iter().rev() {
            h = e.fma(&[Fma::mul(&tau, &h).plus_const(*c)])?.remove(0);
        }
        Ok(h)
    }

    /// Protocol jobs of `eval`.
    pub fn jobs(&self) -> usize {
        self.degree() + usize::from(self.center != 0.0 || self.half_width != 1.0)
    }
}

/// Powers `t^1 ..= t^max` in ceil(log2(max)) rounds (round r computes the powers in
/// (2^(r-1), 2^r] as products of two lower powers): `max - 1` multiplications.
pub fn powers<E: FxpOps>(e: &E, t: &E::A, max: usize) -> Result<Vec<E::A>> {
    let mut pw: Vec<E::A> = vec![t.clone()]; // pw[k-1] = t^k
    let mut have = 1;
    while have < max {
        let next = (2 * have).min(max);
        let jobs: Vec<_> = (have + 1..=next)
            .map(|k| Fma::mul(&pw[have - 1], &pw[k - have - 1]))
            .collect();
        let new = e.fma(&jobs)?;
        pw.extend(new);
        have = next;
    }
    Ok(pw)
}
