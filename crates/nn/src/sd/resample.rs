//! diffusers' `Upsample2D` and `Downsample2D` (the variants with a conv), as the VAE and the
//! U-Net of the Stable Diffusion family use them.

use crate::layers::Naming::Diffusers;
use crate::layers::{join, Conv2d};
use crate::{Backend, ConvSpec, Padding, ParamSource, Result};

/// Nearest x2, then a 3x3 conv. When the skip connection it meets has an odd size (7 -> 4 -> 7),
/// the doubled map is cropped to it, which is exactly what diffusers' `interpolate(size=...)` does
/// for nearest upsampling by a factor below 2.
pub struct Upsample2d<B: Backend> {
    conv: Conv2d<B>,
}

impl<B: Backend> Upsample2d<B> {
    pub fn new(
        backend: &B,
        src: &mut dyn ParamSource<B>,
        prefix: &str,
        channels: usize,
    ) -> Result<Self> {
        let conv = Conv2d::load(
            backend,
            src,
            Diffusers,
            &join(prefix, "conv"),
            (channels, channels),
            3,
            ConvSpec {
                stride: 1,
                padding: Padding::symmetric(1),
            },
        )?;
        Ok(Upsample2d { conv })
    }

    pub fn forward(
        &self,
        backend: &B,
        x: &B::Tensor,
        size: Option<(usize, usize)>,
    ) -> Result<B::Tensor> {
        let mut up = backend.upsample_nearest2d(x, 2)?;
        if let Some((h, w)) = size {
            let s = backend.shape(&up);
            if h > s[2] || w > s[3] {
                return Err(crate::Error::shape(
                    "upsample",
                    format!("cannot crop {:?} to {h}x{w}", s),
                ));
            }
            if h < s[2] {
                up = backend.narrow(&up, 2, 0, h)?;
            }
            if w < s[3] {
                up = backend.narrow(&up, 3, 0, w)?;
            }
        }
        self.conv.forward(backend, &up)
    }
}

/// A 3x3 conv of stride 2. The VAE encoder pads only bottom/right by one (padding 0 +
/// `F.pad(0,1,0,1)`); the U-Net pads 1 on every side.
pub struct Downsample2d<B: Backend> {
    conv: Conv2d<B>,
}

impl<B: Backend> Downsample2d<B> {
    pub fn new(
        backend: &B,
        src: &mut dyn ParamSource<B>,
        prefix: &str,
        channels: usize,
        asymmetric_pad: bool,
    ) -> Result<Self> {
        let padding = if asymmetric_pad {
            Padding::Explicit {
                top: 0,
                bottom: 1,
                left: 0,
                right: 1,
            }
        } else {
            Padding::symmetric(1)
        };
        let conv = Conv2d::load(
            backend,
            src,
            Diffusers,
            &join(prefix, "conv"),
            (channels, channels),
            3,
            ConvSpec { stride: 2, padding },
        )?;
        Ok(Downsample2d { conv })
    }

    pub fn forward(&self, backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        self.conv.forward(backend, x)
    }
}
