//! The small layers the Stable Diffusion family is built from, each holding its parameters and
//! naming them as diffusers does (`<prefix>.weight`, `<prefix>.bias`).

use crate::{Backend, ConvSpec, ParamSource, Result};

/// `prefix.name`, or `name` when the prefix is empty.
pub fn join(prefix: &str, name: impl std::fmt::Display) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A dense layer, `x @ w + b`; `w` is (in, out) internally, (out, in) in diffusers files.
pub struct Linear<B: Backend> {
    weight: B::Param,
    bias: Option<B::Param>,
}

impl<B: Backend> Linear<B> {
    pub fn new(
        backend: &B,
        src: &mut dyn ParamSource<B>,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = src.param(backend, &join(prefix, "weight"), &[in_dim, out_dim])?;
        let bias = if bias {
            Some(src.param(backend, &join(prefix, "bias"), &[out_dim])?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    pub fn forward(&self, backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        backend.linear(x, &self.weight, self.bias.as_ref())
    }
}

/// A 2-D convolution with bias; kernel (out, in, k, k).
pub struct Conv2d<B: Backend> {
    weight: B::Param,
    bias: B::Param,
    spec: ConvSpec,
}

impl<B: Backend> Conv2d<B> {
    pub fn new(
        backend: &B,
        src: &mut dyn ParamSource<B>,
        prefix: &str,
        (in_ch, out_ch, kernel): (usize, usize, usize),
        spec: ConvSpec,
    ) -> Result<Self> {
        let weight = src.param(
            backend,
            &join(prefix, "weight"),
            &[out_ch, in_ch, kernel, kernel],
        )?;
        let bias = src.param(backend, &join(prefix, "bias"), &[out_ch])?;
        Ok(Conv2d { weight, bias, spec })
    }

    pub fn forward(&self, backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        backend.conv2d(x, &self.weight, Some(&self.bias), self.spec)
    }
}

pub struct GroupNorm<B: Backend> {
    gamma: B::Param,
    beta: B::Param,
    groups: usize,
    eps: f32,
}

impl<B: Backend> GroupNorm<B> {
    pub fn new(
        backend: &B,
        src: &mut dyn ParamSource<B>,
        prefix: &str,
        groups: usize,
        channels: usize,
        eps: f32,
    ) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(crate::Error::Config(format!(
                "{prefix}: {channels} channels cannot be split into {groups} groups"
            )));
        }
        Ok(GroupNorm {
            gamma: src.param(backend, &join(prefix, "weight"), &[channels])?,
            beta: src.param(backend, &join(prefix, "bias"), &[channels])?,
            groups,
            eps,
        })
    }

    pub fn forward(&self, backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        backend.group_norm(x, self.groups, &self.gamma, &self.beta, self.eps)
    }
}

pub struct LayerNorm<B: Backend> {
    gamma: B::Param,
    beta: B::Param,
    eps: f32,
}

impl<B: Backend> LayerNorm<B> {
    pub fn new(
        backend: &B,
        src: &mut dyn ParamSource<B>,
        prefix: &str,
        dim: usize,
        eps: f32,
    ) -> Result<Self> {
        Ok(LayerNorm {
            gamma: src.param(backend, &join(prefix, "weight"), &[dim])?,
            beta: src.param(backend, &join(prefix, "bias"), &[dim])?,
            eps,
        })
    }

    pub fn forward(&self, backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        backend.layer_norm(x, &self.gamma, &self.beta, self.eps)
    }
}

/// diffusers' `Upsample2D` with a conv: nearest x2, then a 3x3 conv. When the skip connection it
/// meets has an odd size (7 -> 4 -> 7), the doubled map is cropped to it, which is exactly what
/// diffusers' `interpolate(size=...)` does for nearest upsampling by a factor below 2.
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
        let conv = Conv2d::new(
            backend,
            src,
            &join(prefix, "conv"),
            (channels, channels, 3),
            ConvSpec {
                stride: 1,
                padding: crate::Padding::symmetric(1),
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

/// diffusers' `Downsample2D` with a conv: a 3x3 conv of stride 2. The VAE encoder pads only
/// bottom/right by one (padding 0 + `F.pad(0,1,0,1)`); the U-Net pads 1 on every side.
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
            crate::Padding::Explicit {
                top: 0,
                bottom: 1,
                left: 0,
                right: 1,
            }
        } else {
            crate::Padding::symmetric(1)
        };
        let conv = Conv2d::new(
            backend,
            src,
            &join(prefix, "conv"),
            (channels, channels, 3),
            ConvSpec { stride: 2, padding },
        )?;
        Ok(Downsample2d { conv })
    }

    pub fn forward(&self, backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        self.conv.forward(backend, x)
    }
}

/// A 3x3 convolution with stride 1 and padding 1 (spatial size kept).
pub fn conv3x3<B: Backend>(
    backend: &B,
    src: &mut dyn ParamSource<B>,
    prefix: &str,
    in_ch: usize,
    out_ch: usize,
) -> Result<Conv2d<B>> {
    Conv2d::new(
        backend,
        src,
        prefix,
        (in_ch, out_ch, 3),
        ConvSpec {
            stride: 1,
            padding: crate::Padding::symmetric(1),
        },
    )
}

/// A 1x1 convolution.
pub fn conv1x1<B: Backend>(
    backend: &B,
    src: &mut dyn ParamSource<B>,
    prefix: &str,
    in_ch: usize,
    out_ch: usize,
) -> Result<Conv2d<B>> {
    Conv2d::new(
        backend,
        src,
        prefix,
        (in_ch, out_ch, 1),
        ConvSpec {
            stride: 1,
            padding: crate::Padding::symmetric(0),
        },
    )
}
