//! `ApproxTensor`: a row-major f64 tensor whose values sit on the fixed-point grid.
//!
//! Layout ops (permute, concat, narrow, upsample, broadcasting) are pure data movement, so they
//! run the ring crate's tested implementations on the values' bit patterns instead of a second
//! copy of that code.

use ring::RingTensor;

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct ApproxTensor {
    shape: Vec<usize>,
    data: Vec<f64>,
}

fn ring_err(e: ring::RingError) -> Error {
    Error::Backend(Box::new(e))
}

impl ApproxTensor {
    pub fn new(shape: &[usize], data: Vec<f64>) -> Result<Self> {
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::shape("tensor", format!("shape {shape:?} overflows")))?;
        if n != data.len() {
            return Err(Error::shape(
                "tensor",
                format!("{} values for shape {shape:?}", data.len()),
            ));
        }
        Ok(ApproxTensor {
            shape: shape.to_vec(),
            data,
        })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &[f64] {
        &self.data
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn into_vec(self) -> Vec<f64> {
        self.data
    }

    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        ApproxTensor::new(shape, self.data.clone())
            .map_err(|_| Error::shape("reshape", format!("{:?} to {shape:?}", self.shape)))
    }

    pub(crate) fn to_bits(&self) -> Result<RingTensor> {
        RingTensor::new(&self.shape, self.data.iter().map(|v| v.to_bits()).collect())
            .map_err(ring_err)
    }

    pub(crate) fn from_bits(t: &RingTensor) -> Self {
        ApproxTensor {
            shape: t.shape().to_vec(),
            data: Self::bits_to_f64(t.data()),
        }
    }

    pub(crate) fn bits_to_f64(bits: &[u64]) -> Vec<f64> {
        bits.iter().map(|&b| f64::from_bits(b)).collect()
    }

    /// Applies a ring layout op to the bit patterns.
    pub(crate) fn via_bits(
        &self,
        op: impl FnOnce(&RingTensor) -> ring::Result<RingTensor>,
    ) -> Result<Self> {
        Ok(Self::from_bits(&op(&self.to_bits()?).map_err(ring_err)?))
    }

    /// Elementwise `f` with numpy broadcasting.
    pub(crate) fn zip(
        &self,
        op: &'static str,
        other: &Self,
        f: impl Fn(f64, f64) -> f64,
    ) -> Result<Self> {
        if self.shape == other.shape {
            let data = self.data.iter().zip(&other.data).map(|(a, b)| f(*a, *b));
            return ApproxTensor::new(&self.shape, data.collect());
        }
        let out = self
            .to_bits()?
            .zip_with(op, &other.to_bits()?, |a, b| {
                f(f64::from_bits(a), f64::from_bits(b)).to_bits()
            })
            .map_err(ring_err)?;
        Ok(Self::from_bits(&out))
    }
}

/// Dense row-major `a (m x k) @ b (k x n)` in f64.
pub(crate) fn gemm_f64(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    assert!(
        a.len() == m * k && b.len() == k * n,
        "gemm_f64: caller passed bad sizes"
    );
    let mut dst = vec![0.0f64; m * n];
    if m == 0 || n == 0 || k == 0 {
        return dst;
    }
    let parallelism = if m * n * k >= 1 << 18 && rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: dst is m x n with row stride n, a is m x k with row stride k, b is k x n with row
    // stride n (all dense, sizes asserted above); dst does not alias a or b.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_and_broadcast_agree_with_loops() {
        let a: Vec<f64> = (0..6).map(|i| i as f64 * 0.5).collect();
        let b: Vec<f64> = (0..12).map(|i| 1.0 - i as f64).collect();
        let c = gemm_f64(&a, &b, 2, 3, 4);
        for i in 0..2 {
            for j in 0..4 {
                let want: f64 = (0..3).map(|k| a[i * 3 + k] * b[k * 4 + j]).sum();
                assert_eq!(c[i * 4 + j], want);
            }
        }
        let x = ApproxTensor::new(&[2, 3], a).unwrap();
        let row = ApproxTensor::new(&[1, 3], vec![1.0, -2.0, 0.25]).unwrap();
        let y = x.zip("add", &row, |p, q| p + q).unwrap();
        assert_eq!(y.data(), &[1.0, -1.5, 1.25, 2.5, 0.0, 2.75]);
        assert!(ApproxTensor::new(&[2, 2], vec![0.0; 3]).is_err());
    }
}
