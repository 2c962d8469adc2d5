//! What a curious HE server can compute from what it receives: inversions of the client's first
//! layers and the noise-trajectory rollout. The leakage audit runs these against real sessions.
//!
//! Inverting the head. The server knows the weights, so the head f (x_t -> split activations) is a
//! known function. We solve min_x ||f(x) - h||^2 by Gauss-Newton with Levenberg-Marquardt damping,
//! the Jacobian taken by finite differences of f (one batched forward of n + 1 inputs). When f is
//! affine (the stem convolution) the Jacobian is exact and one step is the least-squares solution;
//! [`AffineInverse`] factors it once and reuses it for every step and sample.

use crate::error::{Error, Result};

/// A batched function: `batch` inputs of `n` values each, concatenated, to `batch` outputs of `m`
/// values each, concatenated.
pub type Batched<'a> = &'a dyn Fn(&[f32], usize) -> Result<Vec<f32>>;

/// Finite-difference step: large enough that f32 rounding of f stays ~1e-5 relative in J.
const FD_STEP: f32 = 1e-2;

/// f(x) and its Jacobian (row-major m x n), by forward differences in one batched call.
pub fn jacobian(f: Batched, x: &[f32]) -> Result<(Vec<f64>, Vec<f64>)> {
    let n = x.len();
    let mut inputs = Vec::with_capacity((n + 1) * n);
    inputs.extend_from_slice(x);
    for j in 0..n {
        let start = inputs.len();
        inputs.extend_from_slice(x);
        inputs[start + j] += FD_STEP;
    }
    let out = f(&inputs, n + 1)?;
    if out.is_empty() || out.len() % (n + 1) != 0 {
        return Err(Error::shape(
            "jacobian",
            format!("{} outputs for a batch of {}", out.len(), n + 1),
        ));
    }
    let m = out.len() / (n + 1);
    let f0: Vec<f64> = out[..m].iter().map(|&v| v as f64).collect();
    let mut jac = vec![0.0; m * n];
    for j in 0..n {
        let col = &out[(j + 1) * m..(j + 2) * m];
        for i in 0..m {
            jac[i * n + j] = (col[i] as f64 - f0[i]) / FD_STEP as f64;
        }
    }
    Ok((f0, jac))
}

/// J^T J (n x n) of a row-major m x n matrix.
fn gram(jac: &[f64], m: usize, n: usize) -> Vec<f64> {
    let mut g = vec![0.0; n * n];
    // SAFETY (of the call): the slices are exactly m*n and n*n long, the strides describe them.
    unsafe {
        matrixmultiply::dgemm(
            n,
            m,
            n,
            1.0,
            jac.as_ptr(),
            1,
            n as isize,
            jac.as_ptr(),
            n as isize,
            1,
            0.0,
            g.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    g
}

/// J^T r.
fn transpose_apply(jac: &[f64], r: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n];
    for (row, &ri) in jac.chunks(n).zip(r) {
        for (o, &j) in out.iter_mut().zip(row) {
            *o += j * ri;
        }
    }
    out
}

/// Cholesky factor L (lower, row-major) of a symmetric positive-definite matrix.
fn cholesky(a: &[f64], n: usize) -> Result<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if s <= 0.0 {
                    return Err(Error::Other(
                        "normal equations not positive definite".into(),
                    ));
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Ok(l)
}

/// Solves L L^T x = b.
fn cholesky_solve(l: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut y = b.to_vec();
    for i in 0..n {
        for k in 0..i {
            y[i] -= l[i * n + k] * y[k];
        }
        y[i] /= l[i * n + i];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            y[i] -= l[k * n + i] * y[k];
        }
        y[i] /= l[i * n + i];
    }
    y
}

/// The least-squares inverse of an affine map f(x) = J x + c, factored once.
pub struct AffineInverse {
    n: usize,
    offset: Vec<f64>,
    jac: Vec<f64>,
    factor: Vec<f64>,
}

impl AffineInverse {
    /// Probes `f` around zero. `ridge` (relative to the largest diagonal entry of J^T J) keeps the
    /// normal equations definite when f loses information; 0 is exact least squares.
    pub fn new(f: Batched, n: usize, ridge: f64) -> Result<AffineInverse> {
        let (offset, jac) = jacobian(f, &vec![0.0; n])?;
        let m = offset.len();
        let mut g = gram(&jac, m, n);
        let max_diag = (0..n).map(|i| g[i * n + i]).fold(0.0, f64::max);
        for i in 0..n {
            g[i * n + i] += ridge * max_diag + 1e-12;
        }
        Ok(AffineInverse {
            n,
            offset,
            factor: cholesky(&g, n)?,
            jac,
        })
    }

    /// argmin_x ||J x + c - h||^2 for one observed output h.
    pub fn solve(&self, h: &[f32]) -> Result<Vec<f32>> {
        if h.len() != self.offset.len() {
            return Err(Error::shape(
                "least squares",
                format!(
                    "observation of {} values, map has {}",
                    h.len(),
                    self.offset.len()
                ),
            ));
        }
        let r: Vec<f64> = h
            .iter()
            .zip(&self.offset)
            .map(|(&h, &c)| h as f64 - c)
            .collect();
        let rhs = transpose_apply(&self.jac, &r, self.n);
        Ok(cholesky_solve(&self.factor, &rhs, self.n)
            .into_iter()
            .map(|v| v as f32)
            .collect())
    }
}

/// Minimises ||f(x) - h||^2 from `x0` by damped Gauss-Newton (Levenberg-Marquardt) for `iters`
/// iterations; returns the best x found and its residual norm.
pub fn gauss_newton(f: Batched, h: &[f32], x0: &[f32], iters: usize) -> Result<(Vec<f32>, f64)> {
    let n = x0.len();
    let residual = |x: &[f32]| -> Result<f64> {
        let out = f(x, 1)?;
        Ok(out
            .iter()
            .zip(h)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum::<f64>())
    };
    let mut x = x0.to_vec();
    let mut cost = residual(&x)?;
    // Converged when the residual is at the level of f32 rounding of the observation.
    let floor = 1e-12 * h.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
    let mut lambda = 1e-3;
    for _ in 0..iters {
        if cost <= floor {
            break;
        }
        let (fx, jac) = jacobian(f, &x)?;
        if fx.len() != h.len() {
            return Err(Error::shape(
                "gauss_newton",
                format!("f gives {} values, observation has {}", fx.len(), h.len()),
            ));
        }
        let r: Vec<f64> = h.iter().zip(&fx).map(|(&h, &f)| h as f64 - f).collect();
        let g = gram(&jac, fx.len(), n);
        let rhs = transpose_apply(&jac, &r, n);
        let max_diag = (0..n).map(|i| g[i * n + i]).fold(0.0, f64::max);
        // Raise the damping until a step lowers the cost (at most a few tries).
        let mut improved = false;
        for _ in 0..6 {
            let mut a = g.clone();
            for i in 0..n {
                a[i * n + i] += lambda * max_diag + 1e-12;
            }
            let step = cholesky_solve(&cholesky(&a, n)?, &rhs, n);
            let trial: Vec<f32> = x.iter().zip(&step).map(|(&x, &s)| x + s as f32).collect();
            let c = residual(&trial)?;
            if c < cost {
                x = trial;
                cost = c;
                lambda = (lambda / 3.0).max(1e-9);
                improved = true;
                break;
            }
            lambda *= 10.0;
        }
        if !improved {
            break;
        }
    }
    Ok((x, cost.sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3x3 "convolution" with a known kernel, 2 output channels, on a 6x6 image.
    fn conv(x: &[f32], batch: usize) -> Result<Vec<f32>> {
        let k = [
            [0.2f32, -0.5, 0.1, 0.7, 1.0, -0.3, 0.05, 0.4, -0.2],
            [0.0, 0.3, 0.0, 0.3, -1.2, 0.3, 0.0, 0.3, 0.0],
        ];
        let mut out = Vec::new();
        for img in x.chunks(36).take(batch) {
            for (c, kc) in k.iter().enumerate() {
                for y in 0..6isize {
                    for xx in 0..6isize {
                        let mut s = 0.1 * c as f32;
                        for dy in -1..=1isize {
                            for dx in -1..=1isize {
                                let (yy, xq) = (y + dy, xx + dx);
                                if (0..6).contains(&yy) && (0..6).contains(&xq) {
                                    s += kc[((dy + 1) * 3 + dx + 1) as usize]
                                        * img[(yy * 6 + xq) as usize];
                                }
                            }
                        }
                        out.push(s);
                    }
                }
            }
        }
        Ok(out)
    }

    #[test]
    fn affine_inverse_recovers_the_input_of_a_convolution() {
        let truth: Vec<f32> = (0..36).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let h = conv(&truth, 1).unwrap();
        let inv = AffineInverse::new(&conv, 36, 0.0).unwrap();
        let got = inv.solve(&h).unwrap();
        let err = got
            .iter()
            .zip(&truth)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-3, "{err}");
    }

    #[test]
    fn gauss_newton_inverts_a_nonlinear_map() {
        // conv followed by a smooth nonlinearity (x + tanh x is invertible).
        let f = |x: &[f32], b: usize| -> Result<Vec<f32>> {
            Ok(conv(x, b)?.into_iter().map(|v| v + v.tanh()).collect())
        };
        let truth: Vec<f32> = (0..36).map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0).collect();
        let h = f(&truth, 1).unwrap();
        let (got, res) = gauss_newton(&f, &h, &[0.0; 36], 30).unwrap();
        let err = got
            .iter()
            .zip(&truth)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-2, "error {err}, residual {res}");
    }
}
