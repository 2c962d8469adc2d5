//! `Plain`: the f32 CPU backend. It is the reference every other mode is checked against and the
//! engine behind `--mode plain`, so it aims to be both exact (f32 throughout, f64 statistics) and
//! fast (im2col + the `gemm` crate, vectorisable elementwise kernels, rayon only where the work
//! pays for the thread hand-off).

#[macro_use]
mod simd;

mod attention;
mod broadcast;
mod conv;
mod gemm;
mod layout;
mod math;
mod norm;
mod tensor;

pub use tensor::PlainTensor;

use crate::backend::{Backend, ConvSpec};
use crate::{Error, Result};
use gemm::{matmul_into, MatRef};
use math::Pointwise;

/// The plaintext f32 backend. Stateless: parameters are ordinary tensors.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain;

impl Plain {
    pub fn new() -> Self {
        Plain
    }
}

fn unary(x: &PlainTensor, op: Pointwise) -> PlainTensor {
    let mut out = vec![0.0f32; x.numel()];
    math::pointwise(op, x.data(), &mut out);
    PlainTensor::from_parts(x.shape().to_vec(), out)
}

impl Backend for Plain {
    type Tensor = PlainTensor;
    type Param = PlainTensor;

    fn name(&self) -> &'static str {
        "plain"
    }

    fn shape(&self, x: &PlainTensor) -> Vec<usize> {
        x.shape().to_vec()
    }

    fn param_shape(&self, p: &PlainTensor) -> Vec<usize> {
        p.shape().to_vec()
    }

    fn public(&self, shape: &[usize], data: &[f32]) -> Result<PlainTensor> {
        PlainTensor::new(shape, data.to_vec())
    }

    fn param_tensor(&self, p: &PlainTensor) -> Result<PlainTensor> {
        Ok(p.clone())
    }

    fn reshape(&self, x: &PlainTensor, shape: &[usize]) -> Result<PlainTensor> {
        if tensor::checked_numel(shape)? != x.numel() {
            return Err(Error::shape(
                "reshape",
                format!("cannot reshape {:?} to {shape:?}", x.shape()),
            ));
        }
        Ok(x.with_shape(shape.to_vec()))
    }

    fn permute(&self, x: &PlainTensor, perm: &[usize]) -> Result<PlainTensor> {
        layout::permute(x, perm)
    }

    fn concat(&self, xs: &[&PlainTensor], axis: usize) -> Result<PlainTensor> {
        layout::concat(xs, axis)
    }

    fn narrow(
        &self,
        x: &PlainTensor,
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<PlainTensor> {
        layout::narrow(x, axis, start, len)
    }

    fn upsample_nearest2d(&self, x: &PlainTensor, factor: usize) -> Result<PlainTensor> {
        layout::upsample_nearest2d(x, factor)
    }

    fn add(&self, a: &PlainTensor, b: &PlainTensor) -> Result<PlainTensor> {
        broadcast::binary("add", a, b, |x, y| x + y)
    }

    fn sub(&self, a: &PlainTensor, b: &PlainTensor) -> Result<PlainTensor> {
        broadcast::binary("sub", a, b, |x, y| x - y)
    }

    fn scale(&self, x: &PlainTensor, c: f32) -> Result<PlainTensor> {
        Ok(unary(x, Pointwise::Scale(c)))
    }

    fn add_scalar(&self, x: &PlainTensor, c: f32) -> Result<PlainTensor> {
        Ok(unary(x, Pointwise::AddScalar(c)))
    }

    fn mul(&self, a: &PlainTensor, b: &PlainTensor) -> Result<PlainTensor> {
        broadcast::binary("mul", a, b, |x, y| x * y)
    }

    fn matmul(&self, a: &PlainTensor, b: &PlainTensor) -> Result<PlainTensor> {
        let (sa, sb) = (a.shape(), b.shape());
        let rank = sa.len();
        if rank < 2
            || sb.len() != rank
            || sa[..rank - 2] != sb[..rank - 2]
            || sa[rank - 1] != sb[rank - 2]
        {
            return Err(Error::shape(
                "matmul",
                format!("cannot multiply {sa:?} by {sb:?} (need (..., m, k) x (..., k, n))"),
            ));
        }
        let (m, k, n) = (sa[rank - 2], sa[rank - 1], sb[rank - 1]);
        let batch: usize = sa[..rank - 2].iter().product();
        let mut out = vec![0.0f32; batch * m * n];
        if m * n > 0 {
            for (i, dst) in out.chunks_exact_mut(m * n).enumerate() {
                matmul_into(
                    dst,
                    MatRef::row_major(&a.data()[i * m * k..(i + 1) * m * k], m, k),
                    MatRef::row_major(&b.data()[i * k * n..(i + 1) * k * n], k, n),
                    false,
                );
            }
        }
        let mut shape = sa[..rank - 1].to_vec();
        shape.push(n);
        Ok(PlainTensor::from_parts(shape, out))
    }

    fn linear(
        &self,
        x: &PlainTensor,
        w: &PlainTensor,
        b: Option<&PlainTensor>,
    ) -> Result<PlainTensor> {
        let (&[k_in, n_out], Some(&k)) = (w.shape(), x.shape().last()) else {
            return Err(Error::shape(
                "linear",
                format!(
                    "input {:?}, kernel {:?} (need (..., in) and (in, out))",
                    x.shape(),
                    w.shape()
                ),
            ));
        };
        if k != k_in || b.is_some_and(|b| b.shape() != [n_out]) {
            return Err(Error::shape(
                "linear",
                format!(
                    "input {:?}, kernel {:?}, bias {:?}",
                    x.shape(),
                    w.shape(),
                    b.map(|b| b.shape().to_vec())
                ),
            ));
        }
        let m = x.numel() / k.max(1);
        let mut out = match b {
            Some(b) => b.data().repeat(m),
            None => vec![0.0f32; m * n_out],
        };
        matmul_into(
            &mut out,
            MatRef::row_major(x.data(), m, k),
            MatRef::row_major(w.data(), k, n_out),
            true,
        );
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("rank >= 1 checked above") = n_out;
        Ok(PlainTensor::from_parts(shape, out))
    }

    fn conv2d(
        &self,
        x: &PlainTensor,
        w: &PlainTensor,
        b: Option<&PlainTensor>,
        spec: ConvSpec,
    ) -> Result<PlainTensor> {
        conv::conv2d(x, w, b, spec)
    }

    fn conv_transpose2d(
        &self,
        x: &PlainTensor,
        w: &PlainTensor,
        b: Option<&PlainTensor>,
        spec: ConvSpec,
    ) -> Result<PlainTensor> {
        conv::conv_transpose2d(x, w, b, spec)
    }

    fn silu(&self, x: &PlainTensor) -> Result<PlainTensor> {
        Ok(unary(x, Pointwise::Silu))
    }

    fn mish(&self, x: &PlainTensor) -> Result<PlainTensor> {
        Ok(unary(x, Pointwise::Mish))
    }

    fn gelu(&self, x: &PlainTensor) -> Result<PlainTensor> {
        Ok(unary(x, Pointwise::Gelu))
    }

    fn softmax(&self, x: &PlainTensor) -> Result<PlainTensor> {
        let d = *x
            .shape()
            .last()
            .ok_or_else(|| Error::shape("softmax", "scalar input"))?;
        let mut out = x.data().to_vec();
        if d > 0 {
            math::softmax_rows(&mut out, d);
        }
        Ok(PlainTensor::from_parts(x.shape().to_vec(), out))
    }

    fn clamp(&self, x: &PlainTensor, lo: f32, hi: f32) -> Result<PlainTensor> {
        if lo.is_nan() || hi.is_nan() || lo > hi {
            return Err(Error::shape("clamp", format!("empty range [{lo}, {hi}]")));
        }
        Ok(unary(x, Pointwise::Clamp(lo, hi)))
    }

    fn group_norm(
        &self,
        x: &PlainTensor,
        groups: usize,
        gamma: &PlainTensor,
        beta: &PlainTensor,
        eps: f32,
    ) -> Result<PlainTensor> {
        norm::group_norm(x, groups, gamma, beta, eps)
    }

    fn layer_norm(
        &self,
        x: &PlainTensor,
        gamma: &PlainTensor,
        beta: &PlainTensor,
        eps: f32,
    ) -> Result<PlainTensor> {
        norm::layer_norm(x, gamma, beta, eps)
    }

    fn attention(
        &self,
        q: &PlainTensor,
        k: &PlainTensor,
        v: &PlainTensor,
        scale: f32,
        causal: bool,
    ) -> Result<PlainTensor> {
        attention::attention(q, k, v, scale, causal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], f: impl Fn(usize) -> f32) -> PlainTensor {
        let n = shape.iter().product();
        PlainTensor::new(shape, (0..n).map(f).collect()).unwrap()
    }

    #[test]
    fn fused_attention_matches_the_trait_default() {
        // The trait's default implementation, spelled out with this backend's primitive ops.
        fn generic(
            b: &Plain,
            q: &PlainTensor,
            k: &PlainTensor,
            v: &PlainTensor,
            causal: bool,
        ) -> PlainTensor {
            let kt = b.permute(k, &[0, 2, 1]).unwrap();
            let scores = b.scale(&b.matmul(q, &kt).unwrap(), 0.3).unwrap();
            let scores = if causal {
                let (l, s) = (q.shape()[1], k.shape()[1]);
                let mask: Vec<f32> = (0..l * s)
                    .map(|i| if i % s > i / s + (s - l) { -1e4 } else { 0.0 })
                    .collect();
                b.add(&scores, &b.public(&[1, l, s], &mask).unwrap())
                    .unwrap()
            } else {
                scores
            };
            b.matmul(&b.softmax(&scores).unwrap(), v).unwrap()
        }
        let b = Plain;
        // One block per batch entry, several row blocks, and big enough for the thread pool.
        for (l, s, d, dv) in [(3, 5, 4, 6), (150, 160, 16, 8), (600, 640, 16, 8)] {
            let q = t(&[2, l, d], |i| (i as f32 * 0.3).sin());
            let k = t(&[2, s, d], |i| (i as f32 * 0.7).cos());
            let v = t(&[2, s, dv], |i| (i as f32 * 0.2).sin());
            for causal in [false, true] {
                let fused = b.attention(&q, &k, &v, 0.3, causal).unwrap();
                let want = generic(&b, &q, &k, &v, causal);
                assert!(
                    fused.max_abs_diff(&want).unwrap() < 1e-5,
                    "causal {causal}, l {l}"
                );
            }
        }
    }

    #[test]
    fn linear_and_matmul_agree() {
        let b = Plain;
        let x = t(&[2, 3, 4], |i| i as f32 * 0.1);
        let w = t(&[4, 5], |i| (i as f32).sin());
        let bias = t(&[5], |i| i as f32);
        let y = b.linear(&x, &w, Some(&bias)).unwrap();
        assert_eq!(y.shape(), &[2, 3, 5]);
        let w_batched = b
            .public(&[2, 4, 5], &[w.data(), w.data()].concat())
            .unwrap();
        let via_matmul = b.add(&b.matmul(&x, &w_batched).unwrap(), &bias).unwrap();
        assert!(y.max_abs_diff(&via_matmul).unwrap() < 1e-5);
        assert!(b.linear(&x, &t(&[3, 5], |_| 0.0), None).is_err());
        assert!(b.matmul(&x, &t(&[2, 3, 4], |_| 0.0)).is_err());
    }

    #[test]
    fn reshape_checks_sizes() {
        let b = Plain;
        let x = t(&[2, 6], |i| i as f32);
        assert_eq!(b.reshape(&x, &[3, 4]).unwrap().shape(), &[3, 4]);
        assert!(b.reshape(&x, &[5, 2]).is_err());
        assert!(b.public(&[2, 2], &[1.0]).is_err());
    }
}
