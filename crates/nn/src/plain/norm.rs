//! Normalisations: GroupNorm over NCHW and LayerNorm over the last axis.
//!
//! Statistics are accumulated in f64: it costs little at these sizes and keeps the result the
//! exact normalisation up to one f32 rounding, whatever the activation's magnitude.

use super::math::{affine, moments as simd_moments};
use super::tensor::PlainTensor;
use crate::{Error, Result};

fn check_affine(op: &'static str, gamma: &PlainTensor, beta: &PlainTensor, c: usize) -> Result<()> {
    if gamma.shape() != [c] || beta.shape() != [c] {
        return Err(Error::shape(
            op,
            format!(
                "scale {:?} and bias {:?} must both be [{c}]",
                gamma.shape(),
                beta.shape()
            ),
        ));
    }
    Ok(())
}

fn moments(values: &[f32], eps: f32) -> (f32, f32) {
    let mut out = (0.0, 0.0);
    simd_moments(values, eps, &mut out);
    out
}

pub(crate) fn group_norm(
    x: &PlainTensor,
    groups: usize,
    gamma: &PlainTensor,
    beta: &PlainTensor,
    eps: f32,
) -> Result<PlainTensor> {
    let shape = x.shape();
    if shape.len() < 2 {
        return Err(Error::shape(
            "group_norm",
            format!("expected (N, C, ...), got {shape:?}"),
        ));
    }
    let c = shape[1];
    if groups == 0 || !c.is_multiple_of(groups) {
        return Err(Error::shape(
            "group_norm",
            format!("{c} channels cannot be split into {groups} groups"),
        ));
    }
    check_affine("group_norm", gamma, beta, c)?;
    let spatial: usize = shape[2..].iter().product();
    let group_len = c / groups * spatial;
    let mut out = vec![0.0f32; x.numel()];
    if group_len > 0 {
        for (g_index, (src, dst)) in x
            .data()
            .chunks_exact(group_len)
            .zip(out.chunks_exact_mut(group_len))
            .enumerate()
        {
            let (mean, inv_std) = moments(src, eps);
            let first_channel = (g_index % groups) * (c / groups);
            for (j, (s_plane, d_plane)) in src
                .chunks_exact(spatial)
                .zip(dst.chunks_exact_mut(spatial))
                .enumerate()
            {
                let ch = first_channel + j;
                let a = inv_std * gamma.data()[ch];
                affine(s_plane, a, beta.data()[ch] - mean * a, d_plane);
            }
        }
    }
    Ok(PlainTensor::from_parts(shape.to_vec(), out))
}

pub(crate) fn layer_norm(
    x: &PlainTensor,
    gamma: &PlainTensor,
    beta: &PlainTensor,
    eps: f32,
) -> Result<PlainTensor> {
    let d = *x
        .shape()
        .last()
        .ok_or_else(|| Error::shape("layer_norm", "scalar input"))?;
    check_affine("layer_norm", gamma, beta, d)?;
    let mut out = vec![0.0f32; x.numel()];
    if d > 0 {
        for (src, dst) in x.data().chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let (mean, inv_std) = moments(src, eps);
            for (((o, &s), &g), &b) in dst.iter_mut().zip(src).zip(gamma.data()).zip(beta.data()) {
                *o = (s - mean) * inv_std * g + b;
            }
        }
    }
    Ok(PlainTensor::from_parts(x.shape().to_vec(), out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_norm_normalises_each_group() {
        let data: Vec<f32> = (0..2 * 4 * 3)
            .map(|i| (i as f32 * 1.7).sin() * 5.0 + 2.0)
            .collect();
        let x = PlainTensor::new(&[2, 4, 3], data).unwrap();
        let gamma = PlainTensor::new(&[4], vec![1.0, 2.0, 1.0, 1.0]).unwrap();
        let beta = PlainTensor::new(&[4], vec![0.0, 0.0, 0.5, 0.0]).unwrap();
        let y = group_norm(&x, 2, &gamma, &beta, 1e-6).unwrap();
        // Undo the affine part, then each group of 2 channels x 3 must have mean 0, variance 1.
        for n in 0..2 {
            for g in 0..2 {
                let mut vals = vec![];
                for ch in 2 * g..2 * g + 2 {
                    for s in 0..3 {
                        let v = y.data()[(n * 4 + ch) * 3 + s];
                        vals.push((v - beta.data()[ch]) / gamma.data()[ch]);
                    }
                }
                let mean: f32 = vals.iter().sum::<f32>() / 6.0;
                let var: f32 = vals.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 6.0;
                assert!(
                    mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
                    "{mean} {var}"
                );
            }
        }
        assert!(group_norm(&x, 3, &gamma, &beta, 1e-6).is_err());
    }

    #[test]
    fn layer_norm_normalises_rows() {
        let x = PlainTensor::new(&[2, 3], vec![1.0, 2.0, 3.0, -1.0, 0.0, 4.0]).unwrap();
        let ones = PlainTensor::new(&[3], vec![1.0; 3]).unwrap();
        let zeros = PlainTensor::new(&[3], vec![0.0; 3]).unwrap();
        let y = layer_norm(&x, &ones, &zeros, 0.0).unwrap();
        let s = (2.0f32 / 3.0).sqrt();
        for (got, want) in y.data()[..3].iter().zip([-1.0 / s, 0.0, 1.0 / s]) {
            assert!((got - want).abs() < 1e-5);
        }
    }
}
