//! Polynomial evaluation on fixed-point tensors, shared by the nonlinear kernels.
//!
//! Polynomials are always evaluated on a scaled variable `tau = (t - center) / half_width` that
//! lies in about [-1, 1] on the function's domain, so every product the truncation sees stays
//! small (a truncation's failure probability grows with the magnitude of the product it
//! truncates). Horner form: one fused multiply-add per degree after the first.

use super::ops::{Fma, FxpOps, Result, SCALED_MAX_FRAC_BITS};

/// A polynomial `sum_k coef[k] * tau^k` in `tau = (t - center) / half_width`.
#[derive(Clone, Copy, Debug)]
pub struct ScaledPoly<'a> {
    pub center: f64,
    pub half_width: f64,
    pub coef: &'a [f64],
}

/// s when `c` is exactly 2^-s with 0 <= s <= f (a coefficient the f-bit grid holds exactly).
fn pow2_shift(c: f64, f: u32) -> Option<i32> {
    let s = -c.log2();
    (s.fract() == 0.0 && (0.0..=f as f64).contains(&s) && (-s).exp2() == c).then_some(s as i32)
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

    /// Evaluates on `t`: by powers (below) when the engine's fraction bits allow scaled products
    /// ([`SCALED_MAX_FRAC_BITS`]) and the degree is at least 2, else by Horner's rule.
    pub fn eval<E: FxpOps>(&self, e: &E, t: &E::A) -> Result<E::A> {
        if self.degree() >= 2 && e.frac_bits() <= SCALED_MAX_FRAC_BITS {
            self.eval_powers(e, t)
        } else {
            self.eval_horner(e, t)
        }
    }

    /// Evaluation by powers with scaled products, on u = t - center (local) with tau = u / h:
    /// the powers tau^2 ..= tau^m, m = ceil(degree / 2), in ceil(log2 m) + ... calls (call r
    /// forms the powers in (2^(r-1), 2^r] as products of two lower ones), then the polynomial in
    /// one job: the terms up to m are linear in the powers, the higher ones scaled products of
    /// two powers. Degree 3-4: 2 calls (2 jobs); 5-6: 3 calls (3 jobs); 7-8: 3 calls (4 jobs);
    /// 9-10: 4 calls (5 jobs). Every job has scaled products, so each costs a robust
    /// product with d = 2f (`product_cost(n, robust, 2f)`, 28.5 bytes per element at f = 18),
    /// against one plain product per degree for Horner; except that a call whose powers all
    /// scale by one power of two 2^-s (h a power of two) forms them as plain products truncated
    /// by f + s bits (26.75 bytes per element at s = 4).
    ///
    /// The scale 1/h enters as coefficients on the f-bit grid; each power's effective scale E_k
    /// (what the rounded coefficients really multiply u^k by) is tracked, and the final
    /// coefficients are c_k h^-k / E_k, so the rounding of 1/h^2 etc. does not bias the result.
    /// Every product is |tau^a tau^b| <= max(|tau|, 1)^degree, far below the 2^(62 - 3f) limit.
    fn eval_powers<E: FxpOps>(&self, e: &E, t: &E::A) -> Result<E::A> {
        let d = self.degree();
        let f = e.frac_bits();
        let enc = |c: f64| (c * (f as f64).exp2()).round() / (f as f64).exp2();
        let inv = 1.0 / self.half_width;
        // u = t - center; with center 0 (exp's fits) it is t itself, not a copy of it.
        let shifted;
        let u = if self.center == 0.0 {
            t
        } else {
            shifted = e.add_const(t, -self.center);
            &shifted
        };
        let m = d.div_ceil(2);
        // pw[k] holds E_k u^k for k >= 2 (pw[0], pw[1] unused; u itself has E_1 = 1). The jobs
        // borrow the powers: a cloned share is a copy of two full-length vectors.
        let mut pw: Vec<Option<E::A>> = vec![None; m + 1];
        let mut eff = vec![1.0f64; m + 1];
        fn power<'a, A>(u: &'a A, pw: &'a [Option<A>], k: usize) -> &'a A {
            if k == 1 {
                u
            } else {
                pw[k].as_ref().expect("power formed in an earlier call")
            }
        }
        let mut have = 1;
        while have < m {
            let next = (2 * have).min(m);
            let ks: Vec<usize> = (have + 1..=next).collect();
            let mults: Vec<f64> = ks
                .iter()
                .map(|&k| inv.powi(k as i32) / (eff[have] * eff[k - have]))
                .collect();
            // Multipliers that are one power of two 2^-s (a half-width that is a power of two)
            // are a shift: plain products truncated by f + s bits instead of scaled ones at 2f
            // (26.75 bytes per element instead of 28.5 at f = 18, s = 4, and narrow values of
            // f + s bits). Only when every job of the call shares s: jobs truncated by different
            // amounts would be separate protocol calls, one after the other.
            let shift = pow2_shift(mults[0], f)
                .filter(|s| mults.iter().all(|&c| pow2_shift(c, f) == Some(*s)));
            let jobs: Vec<Fma<'_, E::A>> = ks
                .iter()
                .zip(&mults)
                .map(|(&k, &c)| {
                    let (a, b) = (power(u, &pw, have), power(u, &pw, k - have));
                    match shift {
                        // Robust like a scaled job: u^2 at 2f bits may be large.
                        Some(s) => Fma {
                            extra_shift: s,
                            robust: true,
                            ..Fma::mul(a, b)
                        },
                        None => Fma::constant(0.0).plus_scaled_product(a, b, c),
                    }
                })
                .collect();
            let out = e.fma(&jobs)?;
            drop(jobs);
            for ((&k, v), c) in ks.iter().zip(out).zip(&mults) {
                eff[k] = enc(*c) * eff[have] * eff[k - have];
                pw[k] = Some(v);
            }
            have = next;
        }
        let at = |k: usize| power(u, &pw, k);
        let mut job = Fma::constant(self.coef[0]);
        for (k, e_k) in eff.iter().enumerate().skip(1) {
            job = job.plus(at(k), self.coef[k] * inv.powi(k as i32) / e_k);
        }
        for k in m + 1..=d {
            let (a, b) = (m, k - m);
            job = job.plus_scaled_product(
                at(a),
                at(b),
                self.coef[k] * inv.powi(k as i32) / (eff[a] * eff[b]),
            );
        }
        Ok(e.fma(&[job])?.remove(0))
    }

    /// Horner's rule (the form for f above [`SCALED_MAX_FRAC_BITS`] and for degree 1).
    ///
    /// When tau = t (`center` 0, `half_width` 1) it is not formed. Otherwise the first round
    /// computes tau and `coef[d] tau + coef[d-1]` as two jobs of one batch (both linear, so they
    /// cost a truncation each, a third of a product): `degree + 1` jobs in `degree` rounds, and
    /// every truncated product is `|tau h|`.
    pub fn eval_horner<E: FxpOps>(&self, e: &E, t: &E::A) -> Result<E::A> {
        let d = self.degree();
        let inv = 1.0 / self.half_width;
        let shift = -self.center * inv;
        let first_step = Fma::affine(
            t,
            self.coef[d] * inv,
            self.coef[d - 1] + self.coef[d] * shift,
        );
        if d == 1 {
            return Ok(e.fma(&[first_step])?.remove(0));
        }
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

    /// Protocol jobs of [`ScaledPoly::eval`] at `frac_bits`.
    pub fn jobs_at(&self, frac_bits: u32) -> usize {
        let d = self.degree();
        if d >= 2 && frac_bits <= SCALED_MAX_FRAC_BITS {
            d.div_ceil(2)
        } else {
            self.jobs()
        }
    }

    /// Protocol jobs of [`ScaledPoly::eval_horner`].
    pub fn jobs(&self) -> usize {
        if self.degree() == 1 {
            return 1;
        }
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

#[cfg(test)]
mod tests {
    use super::pow2_shift;

    #[test]
    fn only_exact_powers_of_two_on_the_grid_are_shifts() {
        assert_eq!(pow2_shift(1.0 / 16.0, 18), Some(4));
        assert_eq!(pow2_shift(1.0, 18), Some(0));
        assert_eq!(pow2_shift((-18f64).exp2(), 18), Some(18));
        assert_eq!(pow2_shift((-19f64).exp2(), 18), None);
        assert_eq!(pow2_shift(2.0, 18), None);
        assert_eq!(pow2_shift(1.0 / 16.0625, 18), None);
        assert_eq!(pow2_shift(-1.0 / 16.0, 18), None);
        assert_eq!(pow2_shift(0.0, 18), None);
    }
}
