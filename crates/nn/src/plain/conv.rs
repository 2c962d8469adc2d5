//! 2-D convolution and transposed convolution as im2col + GEMM.
//!
//! Both are one kernel: a stride-`s` convolution over the input dilated by `d` (d - 1 zeros
//! between neighbouring pixels) with explicit zero padding. A convolution has d = 1; flax's
//! transposed convolution (`lax.conv_transpose`, `transpose_kernel=False`) is a stride-1
//! convolution with d = its stride and the unflipped kernel, which is exactly what this computes.

use rayon::prelude::*;

use super::gemm::{matmul_into, MatRef};
use super::tensor::PlainTensor;
use crate::backend::{ConvSpec, Padding};
use crate::{Error, Result};

/// Batches whose convolution has fewer multiply-adds than this run on one thread (a few
/// milliseconds of work: below that, waiting for a second thread on a busy machine costs more
/// than it saves).
const PARALLEL_MIN_MACS: usize = 1 << 22;

thread_local! {
    /// The column matrix of the last im2col on this thread, reused to avoid an allocation and a
    /// zero fill per convolution.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Geometry of one spatial axis: input size, kernel size, padding before/after, dilation of the
/// input, stride and the resulting output size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Axis {
    pub input: usize,
    pub kernel: usize,
    pub pad_before: usize,
    pub pad_after: usize,
    pub dilation: usize,
    pub stride: usize,
    pub output: usize,
}

impl Axis {
    /// A convolution axis. SAME pads like XLA: output ceil(in / s), the odd pad goes after.
    pub fn conv(
        op: &'static str,
        input: usize,
        kernel: usize,
        stride: usize,
        pad: Option<(usize, usize)>,
    ) -> Result<Axis> {
        if stride == 0 || kernel == 0 {
            return Err(Error::shape(op, "stride and kernel size must be positive"));
        }
        let (pad_before, pad_after) = match pad {
            Some(p) => p,
            None => {
                let output = input.div_ceil(stride);
                let total = ((output.max(1) - 1) * stride + kernel).saturating_sub(input);
                (total / 2, total - total / 2)
            }
        };
        let padded = input + pad_before + pad_after;
        if input == 0 || padded < kernel {
            return Err(Error::shape(
                op,
                format!("input size {input} with padding {pad_before}+{pad_after} is smaller than kernel {kernel}"),
            ));
        }
        Ok(Axis {
            input,
            kernel,
            pad_before,
            pad_after,
            dilation: 1,
            stride,
            output: (padded - kernel) / stride + 1,
        })
    }

    /// A flax/`lax.conv_transpose` axis: stride-1 convolution over the input dilated by `stride`.
    /// SAME gives output `input * stride`, with `lax`'s split of the k + s - 2 padding.
    pub fn conv_transpose(
        op: &'static str,
        input: usize,
        kernel: usize,
        stride: usize,
        pad: Option<(usize, usize)>,
    ) -> Result<Axis> {
        if stride == 0 || kernel == 0 || input == 0 {
            return Err(Error::shape(
                op,
                "stride, kernel and input sizes must be positive",
            ));
        }
        let (pad_before, pad_after) = match pad {
            Some(p) => p,
            None => {
                let total = kernel + stride - 2;
                let before = if stride > kernel - 1 {
                    kernel - 1
                } else {
                    total.div_ceil(2)
                };
                (before, total - before)
            }
        };
        let padded = (input - 1) * stride + 1 + pad_before + pad_after;
        if padded < kernel {
            return Err(Error::shape(
                op,
                format!("dilated input {padded} is smaller than kernel {kernel}"),
            ));
        }
        Ok(Axis {
            input,
            kernel,
            pad_before,
            pad_after,
            dilation: stride,
            stride: 1,
            output: padded - kernel + 1,
        })
    }

    /// Index into the undilated, unpadded input for output `o` and kernel tap `k`, if any.
    #[inline(always)]
    fn source(&self, o: usize, k: usize) -> Option<usize> {
        let p = (o * self.stride + k).checked_sub(self.pad_before)?;
        if p % self.dilation != 0 {
            return None;
        }
        let i = p / self.dilation;
        (i < self.input).then_some(i)
    }
}

/// Explicit (before, after) padding of one axis, or `None` for SAME.
type AxisPad = Option<(usize, usize)>;

fn explicit_pads(padding: Padding) -> (AxisPad, AxisPad) {
    match padding {
        Padding::Same => (None, None),
        Padding::Explicit {
            top,
            bottom,
            left,
            right,
        } => (Some((top, bottom)), Some((left, right))),
    }
}

/// Unfolds one (C, H, W) image into `cols`, a (C * kh * kw, Ho * Wo) row-major matrix.
fn im2col(cols: &mut [f32], image: &[f32], channels: usize, ay: &Axis, ax: &Axis) {
    let (h, w) = (ay.input, ax.input);
    let (wo, out_plane) = (ax.output, ay.output * ax.output);
    let unit = |a: &Axis| a.stride == 1 && a.dilation == 1;
    if unit(ay) && unit(ax) && wo == w {
        return im2col_shifted_planes(cols, image, channels, ay, ax);
    }
    // For each tap kx, the input column every output column reads, or `w` (a zero sentinel
    // appended to each row) where it falls in the padding or between dilated pixels. Building it
    // once turns the inner loop into a branch-free gather.
    let gather: Vec<u32> = (0..ax.kernel)
        .flat_map(|kx| (0..wo).map(move |ox| ax.source(ox, kx).unwrap_or(w) as u32))
        .collect();
    let mut row_buf = vec![0.0f32; w + 1];
    let mut row = 0;
    for c in 0..channels {
        let plane = &image[c * h * w..(c + 1) * h * w];
        for ky in 0..ay.kernel {
            for kx in 0..ax.kernel {
                let dst = &mut cols[row * out_plane..(row + 1) * out_plane];
                let taps = &gather[kx * wo..(kx + 1) * wo];
                for oy in 0..ay.output {
                    let d = &mut dst[oy * wo..(oy + 1) * wo];
                    match ay.source(oy, ky) {
                        None => d.fill(0.0),
                        Some(iy) => {
                            row_buf[..w].copy_from_slice(&plane[iy * w..(iy + 1) * w]);
                            for (v, &i) in d.iter_mut().zip(taps) {
                                *v = row_buf[i as usize];
                            }
                        }
                    }
                }
                row += 1;
            }
        }
    }
}

/// im2col for stride 1, no dilation and output width = input width (e.g. SAME): each tap's row
/// of `cols` is the whole plane shifted by (ky - pad_top) * W + (kx - pad_left), so it is one
/// contiguous copy, after which the entries that wrapped around a row edge are zeroed.
fn im2col_shifted_planes(cols: &mut [f32], image: &[f32], channels: usize, ay: &Axis, ax: &Axis) {
    let (h, w, ho) = (ay.input, ax.input, ay.output);
    let (plane_in, plane_out) = (h * w, ho * w);
    let mut row = 0;
    for c in 0..channels {
        let plane = &image[c * plane_in..(c + 1) * plane_in];
        for ky in 0..ay.kernel {
            for kx in 0..ax.kernel {
                let dst = &mut cols[row * plane_out..(row + 1) * plane_out];
                // dst[i] = plane[i + shift] where that index exists.
                let shift = (ky * w + kx) as isize - (ay.pad_before * w + ax.pad_before) as isize;
                let lo = (-shift).clamp(0, plane_out as isize) as usize;
                let hi =
                    (plane_in as isize - shift).clamp(lo as isize, plane_out as isize) as usize;
                dst[..lo].fill(0.0);
                if hi > lo {
                    let start = (lo as isize + shift) as usize;
                    dst[lo..hi].copy_from_slice(&plane[start..start + hi - lo]);
                }
                dst[hi..].fill(0.0);
                // Columns whose source x = ox + kx - pad_left is outside 0..w read a neighbour row.
                let dx = kx as isize - ax.pad_before as isize;
                let (bad_lo, bad_hi) = if dx < 0 {
                    (0, (-dx as usize).min(w))
                } else {
                    (w - (dx as usize).min(w), w)
                };
                if bad_hi > bad_lo {
                    for r in dst.chunks_exact_mut(w) {
                        r[bad_lo..bad_hi].fill(0.0);
                    }
                }
                row += 1;
            }
        }
    }
}

/// The shared kernel: x (N, Cin, H, W), w (Cout, Cin, kh, kw), b (Cout).
fn conv_general(
    op: &'static str,
    x: &PlainTensor,
    w: &PlainTensor,
    b: Option<&PlainTensor>,
    make_axis: impl Fn(usize, usize, Option<(usize, usize)>) -> Result<Axis>,
    padding: Padding,
) -> Result<PlainTensor> {
    let (&[n, cin, h, wd], &[cout, wcin, kh, kw]) = (x.shape(), w.shape()) else {
        return Err(Error::shape(
            op,
            format!(
                "expected NCHW input and (out, in, kh, kw) kernel, got {:?} and {:?}",
                x.shape(),
                w.shape()
            ),
        ));
    };
    if wcin != cin {
        return Err(Error::shape(
            op,
            format!("input has {cin} channels, kernel expects {wcin}"),
        ));
    }
    if let Some(b) = b {
        if b.shape() != [cout] {
            return Err(Error::shape(
                op,
                format!("bias shape {:?}, expected [{cout}]", b.shape()),
            ));
        }
    }
    let (pad_y, pad_x) = explicit_pads(padding);
    let ay = make_axis(h, kh, pad_y)?;
    let ax = make_axis(wd, kw, pad_x)?;
    let (k, plane_out) = (cin * kh * kw, ay.output * ax.output);
    let weights = MatRef::row_major(w.data(), cout, k);
    // A 1x1 stride-1 unpadded convolution reads the image itself as the column matrix.
    let identity_cols = kh == 1
        && kw == 1
        && ay.stride == 1
        && ax.stride == 1
        && ay.dilation == 1
        && ax.dilation == 1
        && ay.pad_before + ay.pad_after + ax.pad_before + ax.pad_after == 0;

    let one_sample = |(image, out): (&[f32], &mut [f32])| {
        if identity_cols {
            matmul_into(out, weights, MatRef::row_major(image, k, plane_out), true);
        } else {
            SCRATCH.with_borrow_mut(|cols| {
                if cols.len() < k * plane_out {
                    cols.resize(k * plane_out, 0.0);
                }
                let cols = &mut cols[..k * plane_out];
                im2col(cols, image, cin, &ay, &ax);
                matmul_into(out, weights, MatRef::row_major(cols, k, plane_out), true);
            });
        }
    };

    // Start from the bias; the GEMM accumulates onto it.
    let mut out = Vec::with_capacity(n * cout * plane_out);
    for _ in 0..n {
        match b {
            Some(b) => b
                .data()
                .iter()
                .for_each(|&v| out.extend(std::iter::repeat_n(v, plane_out))),
            None => out.resize(out.len() + cout * plane_out, 0.0),
        }
    }
    let inputs = x.data().chunks_exact(cin * h * wd);
    if n > 1 && n * cout * k * plane_out >= PARALLEL_MIN_MACS {
        let inputs: Vec<&[f32]> = inputs.collect();
        inputs
            .into_par_iter()
            .zip(out.par_chunks_exact_mut(cout * plane_out))
            .for_each(one_sample);
    } else {
        inputs
            .zip(out.chunks_exact_mut(cout * plane_out))
            .for_each(one_sample);
    }
    Ok(PlainTensor::from_parts(
        vec![n, cout, ay.output, ax.output],
        out,
    ))
}

pub(crate) fn conv2d(
    x: &PlainTensor,
    w: &PlainTensor,
    b: Option<&PlainTensor>,
    spec: ConvSpec,
) -> Result<PlainTensor> {
    let op = "conv2d";
    conv_general(
        op,
        x,
        w,
        b,
        |input, kernel, pad| Axis::conv(op, input, kernel, spec.stride, pad),
        spec.padding,
    )
}

pub(crate) fn conv_transpose2d(
    x: &PlainTensor,
    w: &PlainTensor,
    b: Option<&PlainTensor>,
    spec: ConvSpec,
) -> Result<PlainTensor> {
    let op = "conv_transpose2d";
    conv_general(
        op,
        x,
        w,
        b,
        |input, kernel, pad| Axis::conv_transpose(op, input, kernel, spec.stride, pad),
        spec.padding,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct evaluation of the definition: sum over taps of the dilated, padded input.
    fn naive(x: &PlainTensor, w: &PlainTensor, ay: Axis, ax: Axis) -> Vec<f32> {
        let (&[n, cin, h, wd], &[cout, _, kh, kw]) = (x.shape(), w.shape()) else {
            unreachable!()
        };
        let mut out = vec![0.0; n * cout * ay.output * ax.output];
        for b in 0..n {
            for co in 0..cout {
                for oy in 0..ay.output {
                    for ox in 0..ax.output {
                        let mut acc = 0.0;
                        for ci in 0..cin {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    // Position in the dilated, padded input.
                                    let py =
                                        (oy * ay.stride + ky) as isize - ay.pad_before as isize;
                                    let px =
                                        (ox * ax.stride + kx) as isize - ax.pad_before as isize;
                                    if py < 0 || px < 0 {
                                        continue;
                                    }
                                    let (py, px) = (py as usize, px as usize);
                                    if py % ay.dilation != 0 || px % ax.dilation != 0 {
                                        continue;
                                    }
                                    let (iy, ix) = (py / ay.dilation, px / ax.dilation);
                                    if iy >= h || ix >= wd {
                                        continue;
                                    }
                                    acc += x.data()[((b * cin + ci) * h + iy) * wd + ix]
                                        * w.data()[((co * cin + ci) * kh + ky) * kw + kx];
                                }
                            }
                        }
                        out[((b * cout + co) * ay.output + oy) * ax.output + ox] = acc;
                    }
                }
            }
        }
        out
    }

    fn pseudo(shape: &[usize], seed: f32) -> PlainTensor {
        let n = shape.iter().product();
        PlainTensor::new(
            shape,
            (0..n).map(|i| ((i as f32 + seed) * 0.731).sin()).collect(),
        )
        .unwrap()
    }

    #[test]
    fn xla_same_padding_for_strided_conv() {
        // 28 -> 14 with k = 3, s = 2: XLA pads 0 before and 1 after.
        let a = Axis::conv("t", 28, 3, 2, None).unwrap();
        assert_eq!((a.pad_before, a.pad_after, a.output), (0, 1, 14));
        let a = Axis::conv("t", 28, 3, 1, None).unwrap();
        assert_eq!((a.pad_before, a.pad_after, a.output), (1, 1, 28));
        let a = Axis::conv("t", 7, 4, 2, None).unwrap();
        assert_eq!((a.pad_before, a.pad_after, a.output), (1, 2, 4));
    }

    #[test]
    fn lax_same_padding_for_transposed_conv() {
        // lax.conv_transpose SAME, k = 3, s = 2: pads (2, 1) around the dilated input, 14 -> 28.
        let a = Axis::conv_transpose("t", 14, 3, 2, None).unwrap();
        assert_eq!((a.pad_before, a.pad_after, a.output), (2, 1, 28));
        // k = 2, s = 2 (s > k - 1): pads (k - 1, s - 1) = (1, 1).
        let a = Axis::conv_transpose("t", 5, 2, 2, None).unwrap();
        assert_eq!((a.pad_before, a.pad_after, a.output), (1, 1, 10));
        // k = 4, s = 2: pad_len 4 split (2, 2).
        let a = Axis::conv_transpose("t", 5, 4, 2, None).unwrap();
        assert_eq!((a.pad_before, a.pad_after, a.output), (2, 2, 10));
    }

    #[test]
    fn im2col_gemm_matches_direct_sum() {
        let x = pseudo(&[2, 3, 9, 8], 0.0);
        let w = pseudo(&[5, 3, 3, 3], 7.0);
        let b = pseudo(&[5], 3.0);
        let cases = [
            ConvSpec::same(1),
            ConvSpec::same(2),
            // Valid padding (output narrower than input) and lopsided padding (same width).
            ConvSpec {
                stride: 1,
                padding: Padding::symmetric(0),
            },
            ConvSpec {
                stride: 1,
                padding: Padding::Explicit {
                    top: 0,
                    bottom: 2,
                    left: 2,
                    right: 0,
                },
            },
            ConvSpec {
                stride: 2,
                padding: Padding::Explicit {
                    top: 1,
                    bottom: 0,
                    left: 2,
                    right: 1,
                },
            },
        ];
        for spec in cases {
            let y = conv2d(&x, &w, Some(&b), spec).unwrap();
            let (py, px) = explicit_pads(spec.padding);
            let ay = Axis::conv("t", 9, 3, spec.stride, py).unwrap();
            let ax = Axis::conv("t", 8, 3, spec.stride, px).unwrap();
            assert_eq!(y.shape(), &[2, 5, ay.output, ax.output]);
            let want = naive(&x, &w, ay, ax);
            let plane = ay.output * ax.output;
            for (i, (&got, &want)) in y.data().iter().zip(&want).enumerate() {
                let bias = b.data()[(i / plane) % 5];
                assert!((got - want - bias).abs() < 1e-5, "{spec:?} at {i}");
            }
        }
    }

    #[test]
    fn transposed_conv_matches_direct_sum() {
        let x = pseudo(&[1, 4, 5, 6], 1.0);
        let w = pseudo(&[3, 4, 3, 3], 2.0);
        let y = conv_transpose2d(&x, &w, None, ConvSpec::same(2)).unwrap();
        assert_eq!(y.shape(), &[1, 3, 10, 12]);
        let ay = Axis::conv_transpose("t", 5, 3, 2, None).unwrap();
        let ax = Axis::conv_transpose("t", 6, 3, 2, None).unwrap();
        let want = naive(&x, &w, ay, ax);
        for (got, want) in y.data().iter().zip(&want) {
            assert!((got - want).abs() < 1e-5);
        }
    }

    #[test]
    fn batch_split_over_threads_matches_one_image_at_a_time() {
        // 2 x 8 x 72 x 128^2 multiply-adds: above PARALLEL_MIN_MACS.
        let x = pseudo(&[2, 8, 128, 128], 0.5);
        let w = pseudo(&[8, 8, 3, 3], 1.5);
        let both = conv2d(&x, &w, None, ConvSpec::same(1)).unwrap();
        for i in 0..2 {
            let image = PlainTensor::new(
                &[1, 8, 128, 128],
                x.data()[i * 8 * 128 * 128..(i + 1) * 8 * 128 * 128].to_vec(),
            )
            .unwrap();
            let one = conv2d(&image, &w, None, ConvSpec::same(1)).unwrap();
            assert_eq!(
                one.data(),
                &both.data()[i * 8 * 128 * 128..(i + 1) * 8 * 128 * 128]
            );
        }
    }

    #[test]
    fn bad_geometry_is_an_error() {
        let x = pseudo(&[1, 2, 4, 4], 0.0);
        assert!(conv2d(&x, &pseudo(&[3, 3, 3, 3], 0.0), None, ConvSpec::same(1)).is_err());
        assert!(conv2d(&x, &pseudo(&[3, 2, 3, 3], 0.0), None, ConvSpec::same(0)).is_err());
        let valid = ConvSpec {
            stride: 1,
            padding: Padding::symmetric(0),
        };
        assert!(conv2d(&x, &pseudo(&[3, 2, 5, 5], 0.0), None, valid).is_err());
    }
}
