//! Elementwise binary ops with numpy broadcasting.
//!
//! Dimensions that both operands traverse contiguously are merged first, so the common cases
//! (equal shapes, an (N, C, 1, 1) bias on an (N, C, H, W) activation) become a few long inner
//! loops instead of an index computation per element.

use super::tensor::PlainTensor;
use crate::{Error, Result};

/// The broadcast shape of `a` and `b` (numpy rules: right-aligned, size-1 dims stretch).
pub(crate) fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() < rank {
            1
        } else {
            s[i + s.len() - rank]
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(Error::shape(
                op,
                format!("cannot broadcast {a:?} with {b:?}"),
            )),
        })
        .collect()
}

/// Strides of `shape` viewed inside `out_shape` (0 along broadcast dimensions).
fn broadcast_strides(shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let offset = out_shape.len() - shape.len();
    let mut strides = vec![0; out_shape.len()];
    let mut stride = 1;
    for i in (0..shape.len()).rev() {
        if shape[i] != 1 {
            strides[offset + i] = stride;
        }
        stride *= shape[i];
    }
    strides
}

/// `f(a, b)` elementwise with broadcasting.
pub(crate) fn binary(
    op: &'static str,
    a: &PlainTensor,
    b: &PlainTensor,
    f: impl Fn(f32, f32) -> f32,
) -> Result<PlainTensor> {
    if a.shape() == b.shape() {
        let data = a
            .data()
            .iter()
            .zip(b.data())
            .map(|(&x, &y)| f(x, y))
            .collect();
        return Ok(PlainTensor::from_parts(a.shape().to_vec(), data));
    }
    let out_shape = broadcast_shape(op, a.shape(), b.shape())?;
    let (dims, sa, sb) = merge_dims(
        &out_shape,
        broadcast_strides(a.shape(), &out_shape),
        broadcast_strides(b.shape(), &out_shape),
    );
    let numel: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(numel);
    if numel > 0 {
        let (ad, bd) = (a.data(), b.data());
        let last = dims.len() - 1;
        let (inner, ia, ib) = (dims[last], sa[last], sb[last]);
        let mut index = vec![0usize; last];
        let (mut oa, mut ob) = (0usize, 0usize);
        loop {
            for j in 0..inner {
                out.push(f(ad[oa + j * ia], bd[ob + j * ib]));
            }
            // Odometer increment over the outer dimensions.
            let mut d = last;
            loop {
                if d == 0 {
                    return Ok(PlainTensor::from_parts(out_shape, out));
                }
                d -= 1;
                index[d] += 1;
                oa += sa[d];
                ob += sb[d];
                if index[d] < dims[d] {
                    break;
                }
                oa -= sa[d] * dims[d];
                ob -= sb[d] * dims[d];
                index[d] = 0;
            }
        }
    }
    Ok(PlainTensor::from_parts(out_shape, out))
}

/// Merges neighbouring dimensions that both operands step through contiguously.
fn merge_dims(
    shape: &[usize],
    sa: Vec<usize>,
    sb: Vec<usize>,
) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    // Size-1 dimensions contribute nothing to any offset.
    let keep: Vec<usize> = (0..shape.len()).filter(|&i| shape[i] != 1).collect();
    let (shape, sa, sb): (Vec<usize>, Vec<usize>, Vec<usize>) = (
        keep.iter().map(|&i| shape[i]).collect(),
        keep.iter().map(|&i| sa[i]).collect(),
        keep.iter().map(|&i| sb[i]).collect(),
    );
    let mut dims = vec![shape.first().copied().unwrap_or(1)];
    let mut ma = vec![sa.first().copied().unwrap_or(0)];
    let mut mb = vec![sb.first().copied().unwrap_or(0)];
    for i in 1..shape.len() {
        let k = dims.len() - 1;
        let mergeable = ma[k] == sa[i] * shape[i] && mb[k] == sb[i] * shape[i];
        if mergeable {
            dims[k] *= shape[i];
            ma[k] = sa[i];
            mb[k] = sb[i];
        } else {
            dims.push(shape[i]);
            ma.push(sa[i]);
            mb.push(sb[i]);
        }
    }
    (dims, ma, mb)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize]) -> PlainTensor {
        let n = shape.iter().product();
        PlainTensor::new(shape, (0..n).map(|i| i as f32).collect()).unwrap()
    }

    #[test]
    fn bias_broadcast_over_spatial_dims() {
        let x = t(&[2, 3, 2, 2]);
        let b = t(&[2, 3, 1, 1]);
        let y = binary("add", &x, &b, |p, q| p + q).unwrap();
        assert_eq!(y.shape(), &[2, 3, 2, 2]);
        for n in 0..2 {
            for c in 0..3 {
                for s in 0..4 {
                    let i = (n * 3 + c) * 4 + s;
                    assert_eq!(y.data()[i], i as f32 + (n * 3 + c) as f32);
                }
            }
        }
    }

    #[test]
    fn both_sides_broadcast_and_rank_differs() {
        let a = t(&[3, 1]);
        let b = t(&[4]);
        let y = binary("mul", &a, &b, |p, q| p * 10.0 + q).unwrap();
        assert_eq!(y.shape(), &[3, 4]);
        for i in 0..3 {
            for j in 0..4 {
                assert_eq!(y.data()[i * 4 + j], i as f32 * 10.0 + j as f32);
            }
        }
        assert!(binary("add", &t(&[3]), &t(&[4]), |p, q| p + q).is_err());
    }
}
