//! 2-D convolution for training as im2col + one GEMM. candle's own CPU conv backward runs a
//! direct (unvectorised) transposed convolution that made a 1M-parameter VAE step take ~10 s of
//! CPU; here the only custom piece is im2col, whose backward is col2im, and every multiply-add
//! (forward, input gradient, kernel gradient) goes through candle's differentiable matmul.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Unfolds (N, C, H, W) into (N, Ho*Wo, C*kh*kw) patches, zero padding outside the image.
#[derive(Clone, Copy, Debug)]
pub struct Im2Col {
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    /// top, bottom, left, right
    pub pad: [usize; 4],
}

impl Im2Col {
    pub fn out_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let (ph, pw) = (h + self.pad[0] + self.pad[1], w + self.pad[2] + self.pad[3]);
        if ph < self.kh || pw < self.kw || self.stride == 0 {
            return None;
        }
        Some((
            (ph - self.kh) / self.stride + 1,
            (pw - self.kw) / self.stride + 1,
        ))
    }

    /// Source pixel of output (oy, ox), kernel tap (ky, kx), or None in the padding.
    #[inline]
    fn src(
        &self,
        (h, w): (usize, usize),
        oy: usize,
        ox: usize,
        ky: usize,
        kx: usize,
    ) -> Option<usize> {
        let iy = (oy * self.stride + ky).checked_sub(self.pad[0])?;
        let ix = (ox * self.stride + kx).checked_sub(self.pad[2])?;
        (iy < h && ix < w).then_some(iy * w + ix)
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        let Some((o1, o2)) = layout.contiguous_offsets() else {
            candle_core::bail!("im2col needs a contiguous input");
        };
        let x = &storage.as_slice::<f32>()?[o1..o2];
        let Some((ho, wo)) = self.out_size(h, w) else {
            candle_core::bail!(
                "im2col: kernel {}x{} larger than padded input {h}x{w}",
                self.kh,
                self.kw
            );
        };
        let row = c * self.kh * self.kw;
        let mut out = vec![0f32; n * ho * wo * row];
        out.par_chunks_mut(ho * wo * row)
            .enumerate()
            .for_each(|(b, dst)| {
                let img = &x[b * c * h * w..(b + 1) * c * h * w];
                for oy in 0..ho {
                    for ox in 0..wo {
                        let r = &mut dst[(oy * wo + ox) * row..(oy * wo + ox + 1) * row];
                        let mut k = 0;
                        for ci in 0..c {
                            let plane = &img[ci * h * w..(ci + 1) * h * w];
                            for ky in 0..self.kh {
                                for kx in 0..self.kw {
                                    if let Some(s) = self.src((h, w), oy, ox, ky, kx) {
                                        r[k] = plane[s];
                                    }
                                    k += 1;
                                }
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, ho * wo, row))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (n, c, h, w) = arg.dims4()?;
        let (ho, wo) = self.out_size(h, w).expect("checked in forward");
        let g = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let row = c * self.kh * self.kw;
        let mut dx = vec![0f32; n * c * h * w];
        dx.par_chunks_mut(c * h * w)
            .enumerate()
            .for_each(|(b, img)| {
                let src = &g[b * ho * wo * row..(b + 1) * ho * wo * row];
                for oy in 0..ho {
                    for ox in 0..wo {
                        let r = &src[(oy * wo + ox) * row..(oy * wo + ox + 1) * row];
                        let mut k = 0;
                        for ci in 0..c {
                            for ky in 0..self.kh {
                                for kx in 0..self.kw {
                                    if let Some(s) = self.src((h, w), oy, ox, ky, kx) {
                                        img[ci * h * w + s] += r[k];
                                    }
                                    k += 1;
                                }
                            }
                        }
                    }
                }
            });
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// `x` (N, C, H, W) convolved with `w` (O, C, kh, kw): im2col, then one (N*Ho*Wo, C*kh*kw) x
/// (C*kh*kw, O) product. 1x1 stride-1 unpadded convs skip the unfolding.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    pad: [usize; 4],
) -> candle_core::Result<Tensor> {
    let (n, c, h, wd) = x.dims4()?;
    let (o, ci, kh, kw) = w.dims4()?;
    if ci != c {
        candle_core::bail!("conv2d: input has {c} channels, kernel expects {ci}");
    }
    let op = Im2Col {
        kh,
        kw,
        stride,
        pad,
    };
    let Some((ho, wo)) = op.out_size(h, wd) else {
        candle_core::bail!("conv2d: kernel {kh}x{kw} larger than padded input {h}x{wd}");
    };
    let kernel = w.reshape((o, c * kh * kw))?.t()?;
    let cols = if kh == 1 && kw == 1 && stride == 1 && pad == [0; 4] {
        x.permute((0, 2, 3, 1))?.reshape((n * h * wd, c))?
    } else {
        x.contiguous()?
            .apply_op1(op)?
            .reshape((n * ho * wo, c * kh * kw))?
    };
    cols.matmul(&kernel)?
        .reshape((n, ho * wo, o))?
        .transpose(1, 2)?
        .reshape((n, o, ho, wo))
}
