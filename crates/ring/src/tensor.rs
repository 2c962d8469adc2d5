//! `RingTensor`: a row-major tensor over Z_2^64. All arithmetic wraps (it is arithmetic mod 2^64),
//! which is what both secret shares and two's-complement fixed-point values need.
//!
//! Layout operations (reshape, permute, concat, narrow, upsample, broadcast) are the ones a model
//! needs on shares: they are local under MPC, so each share component is moved the same way.

use crate::error::{Result, RingError};
use crate::gemm;

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RingTensor {
    shape: Vec<usize>,
    data: Vec<u64>,
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The numpy broadcast of two shapes.
pub fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(RingError::shape(
                    op,
                    format!("shapes {a:?} and {b:?} do not broadcast"),
                ))
            }
        };
    }
    Ok(out)
}

/// Strides for reading a tensor of `shape` as if it had shape `out` (0 on broadcast axes).
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let own = strides(shape);
    let off = out.len() - shape.len();
    (0..out.len())
        .map(|i| {
            if i < off || shape[i - off] == 1 {
                0
            } else {
                own[i - off]
            }
        })
        .collect()
}

/// Calls `f(out_index, src_offset)` for every element of `out`, where `src_offset` walks `st`.
fn for_each_offset(out: &[usize], st: &[usize], mut f: impl FnMut(usize, usize)) {
    let total = numel(out);
    if total == 0 {
        return;
    }
    let nd = out.len();
    let mut idx = vec![0usize; nd];
    let mut off = 0usize;
    for o in 0..total {
        f(o, off);
        for ax in (0..nd).rev() {
            idx[ax] += 1;
            off += st[ax];
            if idx[ax] < out[ax] {
                break;
            }
            off -= st[ax] * out[ax];
            idx[ax] = 0;
        }
    }
}

impl RingTensor {
    pub fn new(shape: &[usize], data: Vec<u64>) -> Result<Self> {
        if numel(shape) != data.len() {
            return Err(RingError::shape(
                "RingTensor::new",
                format!(
                    "shape {shape:?} needs {} values, got {}",
                    numel(shape),
                    data.len()
                ),
            ));
        }
        Ok(RingTensor {
            shape: shape.to_vec(),
            data,
        })
    }

    pub fn zeros(shape: &[usize]) -> Self {
        RingTensor {
            shape: shape.to_vec(),
            data: vec![0; numel(shape)],
        }
    }

    /// A tensor with every element equal to `v`.
    pub fn full(shape: &[usize], v: u64) -> Self {
        RingTensor {
            shape: shape.to_vec(),
            data: vec![v; numel(shape)],
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn data(&self) -> &[u64] {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut [u64] {
        &mut self.data
    }
    pub fn into_data(self) -> Vec<u64> {
        self.data
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Same data, `shape` replaced by one with as many elements.
    pub fn with_data(&self, data: Vec<u64>) -> Result<Self> {
        Self::new(&self.shape, data)
    }

    fn same_shape(&self, op: &'static str, other: &Self) -> Result<()> {
        if self.shape != other.shape {
            return Err(RingError::shape(
                op,
                format!("shapes {:?} and {:?} differ", self.shape, other.shape),
            ));
        }
        Ok(())
    }

    // ---- elementwise ------------------------------------------------------------------------

    /// Elementwise `f(a, b)` with numpy broadcasting.
    pub fn zip_with(
        &self,
        op: &'static str,
        other: &Self,
        f: impl Fn(u64, u64) -> u64,
    ) -> Result<Self> {
        if self.shape == other.shape {
            let data = self
                .data
                .iter()
                .zip(&other.data)
                .map(|(&a, &b)| f(a, b))
                .collect();
            return Ok(RingTensor {
                shape: self.shape.clone(),
                data,
            });
        }
        let out = broadcast_shape(op, &self.shape, &other.shape)?;
        let sa = broadcast_strides(&self.shape, &out);
        let sb = broadcast_strides(&other.shape, &out);
        let mut a_off = Vec::with_capacity(numel(&out));
        for_each_offset(&out, &sa, |_, o| a_off.push(o));
        let mut data = Vec::with_capacity(numel(&out));
        for_each_offset(&out, &sb, |i, o| {
            data.push(f(self.data[a_off[i]], other.data[o]))
        });
        Ok(RingTensor { shape: out, data })
    }

    pub fn map(&self, f: impl Fn(u64) -> u64) -> Self {
        RingTensor {
            shape: self.shape.clone(),
            data: self.data.iter().map(|&a| f(a)).collect(),
        }
    }

    pub fn add(&self, other: &Self) -> Result<Self> {
        self.zip_with("add", other, u64::wrapping_add)
    }
    pub fn sub(&self, other: &Self) -> Result<Self> {
        self.zip_with("sub", other, u64::wrapping_sub)
    }
    /// Elementwise ring product (no fixed-point rescaling).
    pub fn mul(&self, other: &Self) -> Result<Self> {
        self.zip_with("mul", other, u64::wrapping_mul)
    }
    pub fn neg(&self) -> Self {
        self.map(u64::wrapping_neg)
    }
    pub fn scale(&self, c: u64) -> Self {
        self.map(|a| a.wrapping_mul(c))
    }
    pub fn add_scalar(&self, c: u64) -> Self {
        self.map(|a| a.wrapping_add(c))
    }
    /// Arithmetic (sign-extending) right shift of every element read as a signed value.
    pub fn shr_arith(&self, d: u32) -> Self {
        self.map(|a| ((a as i64) >> d) as u64)
    }

    pub fn add_assign(&mut self, other: &Self) -> Result<()> {
        self.same_shape("add_assign", other)?;
        for (a, &b) in self.data.iter_mut().zip(&other.data) {
            *a = a.wrapping_add(b);
        }
        Ok(())
    }
    pub fn sub_assign(&mut self, other: &Self) -> Result<()> {
        self.same_shape("sub_assign", other)?;
        for (a, &b) in self.data.iter_mut().zip(&other.data) {
            *a = a.wrapping_sub(b);
        }
        Ok(())
    }

    // ---- layout -----------------------------------------------------------------------------

    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        if numel(shape) != self.data.len() {
            return Err(RingError::shape(
                "reshape",
                format!("cannot reshape {:?} to {shape:?}", self.shape),
            ));
        }
        Ok(RingTensor {
            shape: shape.to_vec(),
            data: self.data.clone(),
        })
    }

    /// Axes reordered: output axis i is input axis `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Self> {
        let nd = self.shape.len();
        let mut seen = vec![false; nd];
        if perm.len() != nd
            || perm
                .iter()
                .any(|&p| p >= nd || std::mem::replace(&mut seen[p], true))
        {
            return Err(RingError::shape(
                "permute",
                format!(
                    "{perm:?} is not a permutation of the axes of {:?}",
                    self.shape
                ),
            ));
        }
        let st = strides(&self.shape);
        let out: Vec<usize> = perm.iter().map(|&p| self.shape[p]).collect();
        let pst: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
        let mut data = Vec::with_capacity(self.data.len());
        for_each_offset(&out, &pst, |_, o| data.push(self.data[o]));
        Ok(RingTensor { shape: out, data })
    }

    /// Swap the last two axes (matrix transpose of every batch entry).
    pub fn transpose_last2(&self) -> Result<Self> {
        let nd = self.shape.len();
        if nd < 2 {
            return Err(RingError::shape("transpose_last2", "needs at least 2 axes"));
        }
        let mut perm: Vec<usize> = (0..nd).collect();
        perm.swap(nd - 2, nd - 1);
        self.permute(&perm)
    }

    pub fn concat(xs: &[&Self], axis: usize) -> Result<Self> {
        let first = xs
            .first()
            .ok_or_else(|| RingError::shape("concat", "no tensors"))?;
        let nd = first.shape.len();
        if axis >= nd {
            return Err(RingError::shape(
                "concat",
                format!("axis {axis} out of range for {:?}", first.shape),
            ));
        }
        for x in xs {
            let ok =
                x.shape.len() == nd && (0..nd).all(|i| i == axis || x.shape[i] == first.shape[i]);
            if !ok {
                return Err(RingError::shape(
                    "concat",
                    format!(
                        "shapes {:?} and {:?} differ off axis {axis}",
                        first.shape, x.shape
                    ),
                ));
            }
        }
        let outer: usize = first.shape[..axis].iter().product();
        let inner: usize = first.shape[axis + 1..].iter().product();
        let mut shape = first.shape.clone();
        shape[axis] = xs.iter().map(|x| x.shape[axis]).sum();
        let mut data = Vec::with_capacity(numel(&shape));
        for o in 0..outer {
            for x in xs {
                let chunk = x.shape[axis] * inner;
                data.extend_from_slice(&x.data[o * chunk..(o + 1) * chunk]);
            }
        }
        Ok(RingTensor { shape, data })
    }

    /// `len` entries of `axis` starting at `start`.
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Result<Self> {
        let nd = self.shape.len();
        if axis >= nd || start + len > self.shape[axis] {
            return Err(RingError::shape(
                "narrow",
                format!(
                    "entries {start}..{} of axis {axis} out of range for {:?}",
                    start + len,
                    self.shape
                ),
            ));
        }
        let outer: usize = self.shape[..axis].iter().product();
        let inner: usize = self.shape[axis + 1..].iter().product();
        let full = self.shape[axis] * inner;
        let mut data = Vec::with_capacity(outer * len * inner);
        for o in 0..outer {
            let base = o * full + start * inner;
            data.extend_from_slice(&self.data[base..base + len * inner]);
        }
        let mut shape = self.shape.clone();
        shape[axis] = len;
        Ok(RingTensor { shape, data })
    }

    /// Nearest-neighbour upsampling of an NCHW tensor by an integer factor.
    pub fn upsample_nearest2d(&self, factor: usize) -> Result<Self> {
        let [n, c, h, w] = match self.shape[..] {
            [n, c, h, w] => [n, c, h, w],
            _ => {
                return Err(RingError::shape(
                    "upsample_nearest2d",
                    format!("expected an NCHW tensor, got {:?}", self.shape),
                ))
            }
        };
        if factor == 0 {
            return Err(RingError::shape(
                "upsample_nearest2d",
                "factor must be positive",
            ));
        }
        let (oh, ow) = (h * factor, w * factor);
        let mut data = Vec::with_capacity(n * c * oh * ow);
        for plane in self.data.chunks_exact(h * w) {
            for y in 0..oh {
                let row = &plane[(y / factor) * w..(y / factor + 1) * w];
                for x in 0..ow {
                    data.push(row[x / factor]);
                }
            }
        }
        Ok(RingTensor {
            shape: vec![n, c, oh, ow],
            data,
        })
    }

    /// Materialise the numpy broadcast of this tensor to `shape`.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Self> {
        let out = broadcast_shape("broadcast_to", &self.shape, shape)?;
        if out != shape {
            return Err(RingError::shape(
                "broadcast_to",
                format!("{:?} does not broadcast to {shape:?}", self.shape),
            ));
        }
        let st = broadcast_strides(&self.shape, &out);
        let mut data = Vec::with_capacity(numel(&out));
        for_each_offset(&out, &st, |_, o| data.push(self.data[o]));
        Ok(RingTensor { shape: out, data })
    }

    /// Wrapping sum over `axis`; the axis is kept with size 1 when `keepdim`.
    pub fn sum_axis(&self, axis: usize, keepdim: bool) -> Result<Self> {
        if axis >= self.shape.len() {
            return Err(RingError::shape(
                "sum_axis",
                format!("axis {axis} out of range for {:?}", self.shape),
            ));
        }
        let outer: usize = self.shape[..axis].iter().product();
        let len = self.shape[axis];
        let inner: usize = self.shape[axis + 1..].iter().product();
        let mut data = vec![0u64; outer * inner];
        for o in 0..outer {
            let acc = &mut data[o * inner..(o + 1) * inner];
            for l in 0..len {
                let src = &self.data[(o * len + l) * inner..(o * len + l + 1) * inner];
                for (a, &s) in acc.iter_mut().zip(src) {
                    *a = a.wrapping_add(s);
                }
            }
        }
        let mut shape = self.shape.clone();
        if keepdim {
            shape[axis] = 1;
        } else {
            shape.remove(axis);
        }
        Ok(RingTensor { shape, data })
    }

    // ---- products ---------------------------------------------------------------------------

    /// Batched wrapping matrix product: (..., m, k) x (..., k, n) -> (..., m, n). The batch dims
    /// must be equal, or `other` may be a plain (k, n) matrix shared by every batch entry.
    pub fn matmul(&self, other: &Self) -> Result<Self> {
        let (batch, m, k, n, b_batched) = matmul_dims(&self.shape, &other.shape)?;
        let mut out_shape = self.shape[..self.shape.len() - 1].to_vec();
        out_shape.push(n);
        if !b_batched && batch > 1 {
            // One GEMM with the batch folded into the rows.
            let data = gemm::gemm(&self.data, &other.data, batch * m, k, n);
            return Ok(RingTensor {
                shape: out_shape,
                data,
            });
        }
        let mut data = Vec::with_capacity(batch * m * n);
        for bi in 0..batch {
            let a = &self.data[bi * m * k..(bi + 1) * m * k];
            let b = if b_batched {
                &other.data[bi * k * n..(bi + 1) * k * n]
            } else {
                &other.data[..]
            };
            data.extend(gemm::gemm(a, b, m, k, n));
        }
        Ok(RingTensor {
            shape: out_shape,
            data,
        })
    }
}

/// (batch, m, k, n, whether `b` is batched) for a batched matmul, or a shape error.
pub fn matmul_dims(a: &[usize], b: &[usize]) -> Result<(usize, usize, usize, usize, bool)> {
    let bad = || {
        RingError::shape(
            "matmul",
            format!("cannot multiply {a:?} by {b:?} (need (..., m, k) x (..., k, n))"),
        )
    };
    if a.len() < 2 || b.len() < 2 {
        return Err(bad());
    }
    let (m, k) = (a[a.len() - 2], a[a.len() - 1]);
    let (k2, n) = (b[b.len() - 2], b[b.len() - 1]);
    if k != k2 {
        return Err(bad());
    }
    let batch: usize = a[..a.len() - 2].iter().product();
    if b.len() == 2 {
        return Ok((batch, m, k, n, false));
    }
    if a[..a.len() - 2] != b[..b.len() - 2] {
        return Err(bad());
    }
    Ok((batch, m, k, n, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize]) -> RingTensor {
        RingTensor::new(shape, (0..numel(shape) as u64).collect()).unwrap()
    }

    #[test]
    fn broadcasting_add_matches_numpy() {
        let a = t(&[2, 3]);
        let b = RingTensor::new(&[3], vec![10, 20, 30]).unwrap();
        assert_eq!(a.add(&b).unwrap().data(), &[10, 21, 32, 13, 24, 35]);
        let c = RingTensor::new(&[2, 1], vec![100, 200]).unwrap();
        assert_eq!(a.add(&c).unwrap().data(), &[100, 101, 102, 203, 204, 205]);
        assert!(a.add(&t(&[2])).is_err());
    }

    #[test]
    fn permute_concat_narrow() {
        let a = t(&[2, 3, 4]);
        let p = a.permute(&[2, 0, 1]).unwrap();
        assert_eq!(p.shape(), &[4, 2, 3]);
        // p[i][j][k] = a[j][k][i]
        // p[1][1][2] = a[1][2][1]
        assert_eq!(p.data()[6 + 3 + 2], a.data()[12 + 2 * 4 + 1]);
        let c = RingTensor::concat(&[&a, &a], 1).unwrap();
        assert_eq!(c.shape(), &[2, 6, 4]);
        assert_eq!(c.narrow(1, 3, 3).unwrap(), a);
        assert!(a.permute(&[0, 0, 1]).is_err());
        assert!(a.narrow(2, 3, 2).is_err());
    }

    #[test]
    fn matmul_batched_and_shared_rhs() {
        let a = t(&[2, 2, 3]);
        let b = t(&[3, 2]);
        let c = a.matmul(&b).unwrap();
        // Row 0 of batch 0: [0,1,2] x [[0,1],[2,3],[4,5]] = [10, 13]
        assert_eq!(&c.data()[..2], &[10, 13]);
        let bb = RingTensor::concat(&[&b.reshape(&[1, 3, 2]).unwrap(); 2], 0).unwrap();
        assert_eq!(a.matmul(&bb).unwrap(), c);
        assert!(a.matmul(&t(&[2, 2])).is_err());
    }

    #[test]
    fn sum_axis_and_upsample() {
        let a = t(&[2, 3]);
        assert_eq!(a.sum_axis(1, false).unwrap().data(), &[3, 12]);
        assert_eq!(a.sum_axis(0, true).unwrap().shape(), &[1, 3]);
        let x = t(&[1, 1, 2, 2]);
        let u = x.upsample_nearest2d(2).unwrap();
        assert_eq!(&u.data()[..4], &[0, 0, 1, 1]);
        assert_eq!(&u.data()[8..12], &[2, 2, 3, 3]);
    }
}
