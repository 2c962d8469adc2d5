//! Data movement: permute, concat, narrow and nearest-neighbour upsampling (reshape is free and
//! lives with the backend).

use super::tensor::PlainTensor;
use crate::{Error, Result};

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

pub(crate) fn permute(x: &PlainTensor, perm: &[usize]) -> Result<PlainTensor> {
    let shape = x.shape();
    let mut seen = vec![false; shape.len()];
    let valid = perm.len() == shape.len()
        && perm
            .iter()
            .all(|&p| p < shape.len() && !std::mem::replace(&mut seen[p], true));
    if !valid {
        return Err(Error::shape(
            "permute",
            format!("{perm:?} is not a permutation of the axes of {shape:?}"),
        ));
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    if perm.iter().enumerate().all(|(i, &p)| i == p) || x.numel() == 0 {
        return Ok(x.with_shape(out_shape));
    }
    let rank = shape.len();
    if rank >= 2
        && perm[..rank - 2].iter().enumerate().all(|(i, &p)| i == p)
        && perm[rank - 2] == rank - 1
    {
        return Ok(PlainTensor::from_parts(out_shape, transpose_last_two(x)));
    }
    let in_strides = contiguous_strides(shape);
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let src = x.data();
    let mut out = Vec::with_capacity(x.numel());
    let last = out_shape.len() - 1;
    let (inner, inner_stride) = (out_shape[last], strides[last]);
    let mut index = vec![0usize; last];
    let mut offset = 0usize;
    'outer: loop {
        out.extend((0..inner).map(|j| src[offset + j * inner_stride]));
        let mut d = last;
        loop {
            if d == 0 {
                break 'outer;
            }
            d -= 1;
            index[d] += 1;
            offset += strides[d];
            if index[d] < out_shape[d] {
                break;
            }
            offset -= strides[d] * out_shape[d];
            index[d] = 0;
        }
    }
    Ok(PlainTensor::from_parts(out_shape, out))
}

/// Swaps the last two axes, in 8 x 8 blocks so that both the reads and the writes stay within a
/// few cache lines.
fn transpose_last_two(x: &PlainTensor) -> Vec<f32> {
    const BLOCK: usize = 8;
    let shape = x.shape();
    let (rows, cols) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let mut out = vec![0.0f32; x.numel()];
    if rows * cols == 0 {
        return out;
    }
    for (src, dst) in x
        .data()
        .chunks_exact(rows * cols)
        .zip(out.chunks_exact_mut(rows * cols))
    {
        for r0 in (0..rows).step_by(BLOCK) {
            for c0 in (0..cols).step_by(BLOCK) {
                for r in r0..(r0 + BLOCK).min(rows) {
                    for c in c0..(c0 + BLOCK).min(cols) {
                        dst[c * rows + r] = src[r * cols + c];
                    }
                }
            }
        }
    }
    out
}

pub(crate) fn concat(xs: &[&PlainTensor], axis: usize) -> Result<PlainTensor> {
    let first = xs
        .first()
        .ok_or_else(|| Error::shape("concat", "no tensors to concatenate"))?;
    let rank = first.shape().len();
    if axis >= rank {
        return Err(Error::shape(
            "concat",
            format!("axis {axis} out of range for rank {rank}"),
        ));
    }
    for x in xs {
        let compatible = x.shape().len() == rank
            && (0..rank).all(|d| d == axis || x.shape()[d] == first.shape()[d]);
        if !compatible {
            return Err(Error::shape(
                "concat",
                format!(
                    "{:?} and {:?} differ outside axis {axis}",
                    first.shape(),
                    x.shape()
                ),
            ));
        }
    }
    let outer: usize = first.shape()[..axis].iter().product();
    let inner: usize = first.shape()[axis + 1..].iter().product();
    let mut out_shape = first.shape().to_vec();
    out_shape[axis] = xs.iter().map(|x| x.shape()[axis]).sum();
    let mut out = Vec::with_capacity(out_shape.iter().product());
    for o in 0..outer {
        for x in xs {
            let chunk = x.shape()[axis] * inner;
            out.extend_from_slice(&x.data()[o * chunk..(o + 1) * chunk]);
        }
    }
    Ok(PlainTensor::from_parts(out_shape, out))
}

pub(crate) fn narrow(
    x: &PlainTensor,
    axis: usize,
    start: usize,
    len: usize,
) -> Result<PlainTensor> {
    let shape = x.shape();
    if axis >= shape.len() || start.checked_add(len).is_none_or(|end| end > shape[axis]) {
        return Err(Error::shape(
            "narrow",
            format!("entries {start}..{start}+{len} of axis {axis} of {shape:?}"),
        ));
    }
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out_shape = shape.to_vec();
    out_shape[axis] = len;
    let mut out = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let base = (o * shape[axis] + start) * inner;
        out.extend_from_slice(&x.data()[base..base + len * inner]);
    }
    Ok(PlainTensor::from_parts(out_shape, out))
}

pub(crate) fn upsample_nearest2d(x: &PlainTensor, factor: usize) -> Result<PlainTensor> {
    let &[n, c, h, w] = x.shape() else {
        return Err(Error::shape(
            "upsample_nearest2d",
            format!("expected NCHW, got {:?}", x.shape()),
        ));
    };
    if factor == 0 {
        return Err(Error::shape("upsample_nearest2d", "factor 0"));
    }
    let (ho, wo) = (h * factor, w * factor);
    let mut out = Vec::with_capacity(n * c * ho * wo);
    for plane in x.data().chunks_exact(h * w) {
        for i in 0..ho {
            let row = &plane[(i / factor) * w..(i / factor + 1) * w];
            out.extend((0..wo).map(|j| row[j / factor]));
        }
    }
    Ok(PlainTensor::from_parts(vec![n, c, ho, wo], out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(shape: &[usize]) -> PlainTensor {
        let n = shape.iter().product();
        PlainTensor::new(shape, (0..n).map(|i| i as f32).collect()).unwrap()
    }

    #[test]
    fn permute_moves_every_element() {
        let x = iota(&[2, 3, 4]);
        let y = permute(&x, &[2, 0, 1]).unwrap();
        assert_eq!(y.shape(), &[4, 2, 3]);
        for a in 0..2 {
            for b in 0..3 {
                for c in 0..4 {
                    assert_eq!(y.data()[(c * 2 + a) * 3 + b], ((a * 3 + b) * 4 + c) as f32);
                }
            }
        }
        assert!(permute(&x, &[0, 0, 1]).is_err());
        // The transpose fast path against the general path (same permutation, via reshape).
        let x = iota(&[3, 13, 10]);
        let fast = permute(&x, &[0, 2, 1]).unwrap();
        for b in 0..3 {
            for r in 0..13 {
                for c in 0..10 {
                    assert_eq!(
                        fast.data()[(b * 10 + c) * 13 + r],
                        ((b * 13 + r) * 10 + c) as f32
                    );
                }
            }
        }
    }

    #[test]
    fn concat_then_narrow_round_trips() {
        let a = iota(&[2, 3, 2]);
        let b = iota(&[2, 1, 2]);
        let c = concat(&[&a, &b], 1).unwrap();
        assert_eq!(c.shape(), &[2, 4, 2]);
        assert_eq!(narrow(&c, 1, 0, 3).unwrap(), a);
        assert_eq!(narrow(&c, 1, 3, 1).unwrap(), b);
        assert!(narrow(&c, 1, 3, 2).is_err());
        assert!(concat(&[&a, &iota(&[3, 1, 2])], 1).is_err());
    }

    #[test]
    fn upsample_repeats_pixels() {
        let x = iota(&[1, 1, 2, 2]);
        let y = upsample_nearest2d(&x, 2).unwrap();
        assert_eq!(
            y.data(),
            &[0., 0., 1., 1., 0., 0., 1., 1., 2., 2., 3., 3., 2., 2., 3., 3.]
        );
    }
}
