//! 2-D convolution and flax transposed convolution over Z_2^64 as im2col + wrapping GEMM.
//!
//! Conventions are those of `nn::backend`: NCHW inputs, OIHW kernels, XLA SAME padding (output
//! ceil(in / s), the odd pad after), and flax `ConvTranspose` (`transpose_kernel=False`): a
//! stride-1 convolution with the *unflipped* kernel over the input dilated by the stride, padded
//! like `lax.conv_transpose`. Both are one kernel here: a strided convolution over a dilated,
//! padded input.
//!
//! The whole batch is unfolded into one column matrix (C*kh*kw, N*Ho*Wo), so a layer is a single
//! GEMM; the MPC layer reuses [`im2col`] to run both share components through one GEMM.

use crate::error::{Result, RingError};
use crate::gemm;
use crate::tensor::RingTensor;

/// Padding of a convolution: XLA SAME or explicit (top, bottom, left, right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPadding {
    Same,
    Explicit([usize; 4]),
}

/// One spatial axis of a convolution over a dilated, padded input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvAxis {
    pub input: usize,
    pub kernel: usize,
    pub pad_before: usize,
    pub pad_after: usize,
    /// Input dilation (1 for a convolution, the stride for a transposed convolution).
    pub dilation: usize,
    pub stride: usize,
    pub output: usize,
}

impl ConvAxis {
    fn conv(
        input: usize,
        kernel: usize,
        stride: usize,
        pad: Option<(usize, usize)>,
    ) -> Result<Self> {
        if stride == 0 || kernel == 0 || input == 0 {
            return Err(RingError::shape(
                "conv2d",
                "stride, kernel and input sizes must be positive",
            ));
        }
        let (pad_before, pad_after) = pad.unwrap_or_else(|| {
            let out = input.div_ceil(stride);
            let total = ((out - 1) * stride + kernel).saturating_sub(input);
            (total / 2, total - total / 2)
        });
        let padded = input + pad_before + pad_after;
        if padded < kernel {
            return Err(RingError::shape(
                "conv2d",
                format!("input {input} padded by {pad_before}+{pad_after} is smaller than kernel {kernel}"),
            ));
        }
        Ok(ConvAxis {
            input,
            kernel,
            pad_before,
            pad_after,
            dilation: 1,
            stride,
            output: (padded - kernel) / stride + 1,
        })
    }

    fn conv_transpose(
        input: usize,
        kernel: usize,
        stride: usize,
        pad: Option<(usize, usize)>,
    ) -> Result<Self> {
        if stride == 0 || kernel == 0 || input == 0 {
            return Err(RingError::shape(
                "conv_transpose2d",
                "stride, kernel and input sizes must be positive",
            ));
        }
        let (pad_before, pad_after) = pad.unwrap_or_else(|| {
            // lax.conv_transpose SAME: k + s - 2 in total, output input * stride.
            let total = kernel + stride - 2;
            let before = if stride > kernel - 1 {
                kernel - 1
            } else {
                total.div_ceil(2)
            };
            (before, total - before)
        });
        let padded = (input - 1) * stride + 1 + pad_before + pad_after;
        if padded < kernel {
            return Err(RingError::shape(
                "conv_transpose2d",
                format!("dilated, padded input {padded} is smaller than kernel {kernel}"),
            ));
        }
        Ok(ConvAxis {
            input,
            kernel,
            pad_before,
            pad_after,
            dilation: stride,
            stride: 1,
            output: padded - kernel + 1,
        })
    }

    /// Input index read by output `o` at tap `t`, if it is not padding or a dilation hole.
    #[inline(always)]
    fn source(&self, o: usize, t: usize) -> Option<usize> {
        let p = (o * self.stride + t).checked_sub(self.pad_before)?;
        if p % self.dilation != 0 {
            return None;
        }
        let i = p / self.dilation;
        (i < self.input).then_some(i)
    }
}

/// Full geometry of a (transposed) convolution of an NCHW input by an OIHW kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub y: ConvAxis,
    pub x: ConvAxis,
}

fn nchw(op: &'static str, what: &str, s: &[usize]) -> Result<[usize; 4]> {
    match *s {
        [a, b, c, d] => Ok([a, b, c, d]),
        _ => Err(RingError::shape(
            op,
            format!("{what} must have 4 axes, got {s:?}"),
        )),
    }
}

type AxisPads = Option<(usize, usize)>;

fn split_pads(p: ConvPadding) -> (AxisPads, AxisPads) {
    match p {
        ConvPadding::Same => (None, None),
        ConvPadding::Explicit([t, b, l, r]) => (Some((t, b)), Some((l, r))),
    }
}

impl ConvGeometry {
    fn checked(op: &'static str, x: &[usize], w: &[usize]) -> Result<([usize; 4], [usize; 4])> {
        let xs = nchw(op, "input (N, C, H, W)", x)?;
        let ws = nchw(op, "kernel (O, I, kh, kw)", w)?;
        if xs[1] != ws[1] {
            return Err(RingError::shape(
                op,
                format!(
                    "input has {} channels but the kernel expects {}",
                    xs[1], ws[1]
                ),
            ));
        }
        Ok((xs, ws))
    }

    pub fn conv2d(x: &[usize], w: &[usize], stride: usize, padding: ConvPadding) -> Result<Self> {
        let (xs, ws) = Self::checked("conv2d", x, w)?;
        let (py, px) = split_pads(padding);
        Ok(ConvGeometry {
            batch: xs[0],
            in_channels: xs[1],
            out_channels: ws[0],
            y: ConvAxis::conv(xs[2], ws[2], stride, py)?,
            x: ConvAxis::conv(xs[3], ws[3], stride, px)?,
        })
    }

    pub fn conv_transpose2d(
        x: &[usize],
        w: &[usize],
        stride: usize,
        padding: ConvPadding,
    ) -> Result<Self> {
        let (xs, ws) = Self::checked("conv_transpose2d", x, w)?;
        let (py, px) = split_pads(padding);
        Ok(ConvGeometry {
            batch: xs[0],
            in_channels: xs[1],
            out_channels: ws[0],
            y: ConvAxis::conv_transpose(xs[2], ws[2], stride, py)?,
            x: ConvAxis::conv_transpose(xs[3], ws[3], stride, px)?,
        })
    }

    /// Rows of the column matrix: C * kh * kw.
    pub fn patch_len(&self) -> usize {
        self.in_channels * self.y.kernel * self.x.kernel
    }
    /// Columns of the column matrix: N * Ho * Wo.
    pub fn columns(&self) -> usize {
        self.batch * self.y.output * self.x.output
    }
    pub fn output_shape(&self) -> [usize; 4] {
        [self.batch, self.out_channels, self.y.output, self.x.output]
    }
}

/// Unfold an NCHW input into the (C*kh*kw, N*Ho*Wo) column matrix of `geo`.
pub fn im2col(x: &RingTensor, geo: &ConvGeometry) -> RingTensor {
    let (ay, ax) = (&geo.y, &geo.x);
    let (h, w) = (ay.input, ax.input);
    let plane = ay.output * ax.output;
    let cols_n = geo.columns();
    let mut cols = vec![0u64; geo.patch_len() * cols_n];
    let x_src: Vec<Option<usize>> = (0..ax.kernel)
        .flat_map(|t| (0..ax.output).map(move |o| ax.source(o, t)))
        .collect();
    for n in 0..geo.batch {
        for c in 0..geo.in_channels {
            let img = &x.data()[(n * geo.in_channels + c) * h * w..][..h * w];
            for ty in 0..ay.kernel {
                for tx in 0..ax.kernel {
                    let row = (c * ay.kernel + ty) * ax.kernel + tx;
                    let dst = &mut cols[row * cols_n + n * plane..][..plane];
                    for oy in 0..ay.output {
                        let Some(iy) = ay.source(oy, ty) else {
                            continue;
                        };
                        let src_row = &img[iy * w..(iy + 1) * w];
                        let d = &mut dst[oy * ax.output..(oy + 1) * ax.output];
                        for (ox, dv) in d.iter_mut().enumerate() {
                            if let Some(ix) = x_src[tx * ax.output + ox] {
                                *dv = src_row[ix];
                            }
                        }
                    }
                }
            }
        }
    }
    RingTensor::new(&[geo.patch_len(), cols_n], cols).expect("im2col sizes")
}

/// Reorder a GEMM result (O, N*Ho*Wo) into NCHW (N, O, Ho, Wo).
pub fn col2out(y: &[u64], geo: &ConvGeometry) -> RingTensor {
    let plane = geo.y.output * geo.x.output;
    let (o_n, n_n) = (geo.out_channels, geo.batch);
    let mut out = vec![0u64; o_n * n_n * plane];
    for o in 0..o_n {
        for n in 0..n_n {
            out[(n * o_n + o) * plane..][..plane]
                .copy_from_slice(&y[o * n_n * plane + n * plane..][..plane]);
        }
    }
    RingTensor::new(&geo.output_shape(), out).expect("col2out sizes")
}

/// The kernel as the (O, C*kh*kw) GEMM operand.
pub fn kernel_matrix(w: &RingTensor, geo: &ConvGeometry) -> Result<RingTensor> {
    w.reshape(&[geo.out_channels, geo.patch_len()])
}

/// Wrapping convolution of `x` by `w` with geometry `geo` (no bias, no rescaling).
pub fn conv_with(x: &RingTensor, w: &RingTensor, geo: &ConvGeometry) -> Result<RingTensor> {
    let cols = im2col(x, geo);
    let wm = kernel_matrix(w, geo)?;
    let y = gemm::gemm(
        wm.data(),
        cols.data(),
        geo.out_channels,
        geo.patch_len(),
        geo.columns(),
    );
    Ok(col2out(&y, geo))
}

pub fn conv2d(
    x: &RingTensor,
    w: &RingTensor,
    stride: usize,
    padding: ConvPadding,
) -> Result<RingTensor> {
    let geo = ConvGeometry::conv2d(x.shape(), w.shape(), stride, padding)?;
    conv_with(x, w, &geo)
}

pub fn conv_transpose2d(
    x: &RingTensor,
    w: &RingTensor,
    stride: usize,
    padding: ConvPadding,
) -> Result<RingTensor> {
    let geo = ConvGeometry::conv_transpose2d(x.shape(), w.shape(), stride, padding)?;
    conv_with(x, w, &geo)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct definition: out[n][o][y][x] = sum_c,ty,tx w[o][c][ty][tx] * in(dilated, padded).
    fn direct(x: &RingTensor, w: &RingTensor, geo: &ConvGeometry) -> Vec<u64> {
        let [n_n, o_n, oh, ow] = geo.output_shape();
        let (c_n, h, wd) = (geo.in_channels, geo.y.input, geo.x.input);
        let (kh, kw) = (geo.y.kernel, geo.x.kernel);
        let mut out = vec![0u64; n_n * o_n * oh * ow];
        for n in 0..n_n {
            for o in 0..o_n {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0u64;
                        for c in 0..c_n {
                            for ty in 0..kh {
                                for tx in 0..kw {
                                    if let (Some(iy), Some(ix)) =
                                        (geo.y.source(oy, ty), geo.x.source(ox, tx))
                                    {
                                        let xv = x.data()[((n * c_n + c) * h + iy) * wd + ix];
                                        let wv = w.data()[((o * c_n + c) * kh + ty) * kw + tx];
                                        acc = acc.wrapping_add(xv.wrapping_mul(wv));
                                    }
                                }
                            }
                        }
                        out[((n * o_n + o) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        out
    }

    fn t(shape: &[usize], seed: u64) -> RingTensor {
        let len: usize = shape.iter().product();
        let data = (0..len as u64)
            .map(|i| (i * 2654435761 + seed * 97) % 1000)
            .collect();
        RingTensor::new(shape, data).unwrap()
    }

    #[test]
    fn same_padding_matches_xla() {
        // 28 -> 14 with k 3 s 2: total pad 1, after = 1 (XLA puts the odd pad after).
        let g = ConvGeometry::conv2d(&[1, 1, 28, 28], &[1, 1, 3, 3], 2, ConvPadding::Same).unwrap();
        assert_eq!((g.y.pad_before, g.y.pad_after, g.y.output), (0, 1, 14));
        let g =
            ConvGeometry::conv_transpose2d(&[1, 1, 14, 14], &[1, 1, 3, 3], 2, ConvPadding::Same)
                .unwrap();
        assert_eq!((g.y.pad_before, g.y.pad_after, g.y.output), (2, 1, 28));
        let g = ConvGeometry::conv_transpose2d(&[1, 1, 5, 5], &[1, 1, 4, 4], 2, ConvPadding::Same)
            .unwrap();
        assert_eq!(g.y.output, 10);
    }

    #[test]
    fn im2col_conv_matches_direct_definition() {
        type Case<'a> = (&'a [usize], &'a [usize], usize, ConvPadding, bool);
        let cases: &[Case] = &[
            (&[2, 3, 7, 6], &[4, 3, 3, 3], 1, ConvPadding::Same, false),
            (&[1, 2, 8, 8], &[3, 2, 3, 3], 2, ConvPadding::Same, false),
            (
                &[1, 2, 5, 4],
                &[2, 2, 2, 3],
                1,
                ConvPadding::Explicit([1, 0, 2, 1]),
                false,
            ),
            (&[2, 2, 4, 5], &[3, 2, 3, 3], 2, ConvPadding::Same, true),
            (&[1, 1, 3, 3], &[2, 1, 4, 4], 2, ConvPadding::Same, true),
            (
                &[1, 2, 3, 2],
                &[1, 2, 2, 2],
                3,
                ConvPadding::Explicit([0, 1, 1, 0]),
                true,
            ),
        ];
        for (i, &(xs, ws, s, p, tr)) in cases.iter().enumerate() {
            let x = t(xs, 1 + i as u64);
            let w = t(ws, 7 + i as u64).map(|v| v.wrapping_sub(500));
            let geo = if tr {
                ConvGeometry::conv_transpose2d(xs, ws, s, p).unwrap()
            } else {
                ConvGeometry::conv2d(xs, ws, s, p).unwrap()
            };
            let got = conv_with(&x, &w, &geo).unwrap();
            assert_eq!(got.data(), &direct(&x, &w, &geo)[..], "case {i}");
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(ConvGeometry::conv2d(&[1, 2, 4, 4], &[1, 3, 3, 3], 1, ConvPadding::Same).is_err());
        assert!(ConvGeometry::conv2d(&[1, 2, 4], &[1, 2, 3, 3], 1, ConvPadding::Same).is_err());
        assert!(ConvGeometry::conv2d(
            &[1, 1, 2, 2],
            &[1, 1, 5, 5],
            1,
            ConvPadding::Explicit([0; 4])
        )
        .is_err());
        assert!(ConvGeometry::conv2d(&[1, 1, 2, 2], &[1, 1, 1, 1], 0, ConvPadding::Same).is_err());
    }
}
