//! The layers both model families are built from (CipherDM's flax U-Net and the Stable Diffusion
//! family): plain structs holding their parameters, each with a `forward`. A layer reads its
//! parameters as `<prefix>.<name>` in the internal layout (dense kernels (in, out), conv kernels
//! (out, in, kh, kw)); only the names differ between checkpoint conventions, see [`Naming`].

use crate::{Backend, ConvSpec, Error, ParamSource, Result};

/// How a checkpoint names a layer's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// flax (CipherDM): `kernel`, `bias`; norms `scale`, `bias`; embedding tables `embedding`.
    Flax,
    /// PyTorch (diffusers, CLIP): `weight` and `bias` everywhere.
    Diffusers,
}

impl Naming {
    fn kernel(self) -> &'static str {
        match self {
            Naming::Flax => "kernel",
            Naming::Diffusers => "weight",
        }
    }

    fn norm_scale(self) -> &'static str {
        match self {
            Naming::Flax => "scale",
            Naming::Diffusers => "weight",
        }
    }

    fn embedding(self) -> &'static str {
        match self {
            Naming::Flax => "embedding",
            Naming::Diffusers => "weight",
        }
    }
}

/// `prefix.name`, or `name` when the prefix is empty.
pub fn join(prefix: &str, name: impl std::fmt::Display) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A 2-D convolution: kernel (out, in, kh, kw), bias (out,).
pub struct Conv2d<B: Backend> {
    pub weight: B::Param,
    pub bias: Option<B::Param>,
    pub spec: ConvSpec,
}

impl<B: Backend> Conv2d<B> {
    pub fn load(
        b: &B,
        src: &mut dyn ParamSource<B>,
        naming: Naming,
        prefix: &str,
        (cin, cout): (usize, usize),
        kernel: usize,
        spec: ConvSpec,
    ) -> Result<Self> {
        Ok(Conv2d {
            weight: src.param(
                b,
                &join(prefix, naming.kernel()),
                &[cout, cin, kernel, kernel],
            )?,
            bias: Some(src.param(b, &join(prefix, "bias"), &[cout])?),
            spec,
        })
    }

    /// A stride-1 convolution that keeps the spatial size (an odd `kernel`, padded by k / 2).
    pub fn load_same(
        b: &B,
        src: &mut dyn ParamSource<B>,
        naming: Naming,
        prefix: &str,
        channels: (usize, usize),
        kernel: usize,
    ) -> Result<Self> {
        Self::load(b, src, naming, prefix, channels, kernel, ConvSpec::same(1))
    }

    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        b.conv2d(x, &self.weight, self.bias.as_ref(), self.spec)
    }
}

/// A transposed convolution with flax semantics (see `Backend::conv_transpose2d`).
pub struct ConvTranspose2d<B: Backend> {
    pub weight: B::Param,
    pub bias: Option<B::Param>,
    pub spec: ConvSpec,
}

impl<B: Backend> ConvTranspose2d<B> {
    pub fn load(
        b: &B,
        src: &mut dyn ParamSource<B>,
        naming: Naming,
        prefix: &str,
        (cin, cout): (usize, usize),
        kernel: usize,
        spec: ConvSpec,
    ) -> Result<Self> {
        Ok(ConvTranspose2d {
            weight: src.param(
                b,
                &join(prefix, naming.kernel()),
                &[cout, cin, kernel, kernel],
            )?,
            bias: Some(src.param(b, &join(prefix, "bias"), &[cout])?),
            spec,
        })
    }

    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        b.conv_transpose2d(x, &self.weight, self.bias.as_ref(), self.spec)
    }
}

/// `x @ weight + bias`, weight (in, out) internally (diffusers files store (out, in); the weight
/// loader transposes).
pub struct Linear<B: Backend> {
    pub weight: B::Param,
    pub bias: Option<B::Param>,
}

impl<B: Backend> Linear<B> {
    pub fn load(
        b: &B,
        src: &mut dyn ParamSource<B>,
        naming: Naming,
        prefix: &str,
        (din, dout): (usize, usize),
        bias: bool,
    ) -> Result<Self> {
        Ok(Linear {
            weight: src.param(b, &join(prefix, naming.kernel()), &[din, dout])?,
            bias: if bias {
                Some(src.param(b, &join(prefix, "bias"), &[dout])?)
            } else {
                None
            },
        })
    }

    /// An embedding table (rows, dim) used as a bias-free dense layer on one-hot rows, so that
    /// a secret label or token selects its row without anyone learning which.
    pub fn load_embedding(
        b: &B,
        src: &mut dyn ParamSource<B>,
        naming: Naming,
        prefix: &str,
        (rows, dim): (usize, usize),
    ) -> Result<Self> {
        Ok(Linear {
            weight: src.param(b, &join(prefix, naming.embedding()), &[rows, dim])?,
            bias: None,
        })
    }

    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        b.linear(x, &self.weight, self.bias.as_ref())
    }
}

/// GroupNorm with a learned per-channel scale and bias.
pub struct GroupNorm<B: Backend> {
    pub scale: B::Param,
    pub bias: B::Param,
    pub groups: usize,
    pub eps: f32,
}

impl<B: Backend> GroupNorm<B> {
    pub fn load(
        b: &B,
        src: &mut dyn ParamSource<B>,
        naming: Naming,
        prefix: &str,
        channels: usize,
        groups: usize,
        eps: f32,
    ) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(Error::Config(format!(
                "{prefix}: {channels} channels cannot be split into {groups} GroupNorm groups"
            )));
        }
        Ok(GroupNorm {
            scale: src.param(b, &join(prefix, naming.norm_scale()), &[channels])?,
            bias: src.param(b, &join(prefix, "bias"), &[channels])?,
            groups,
            eps,
        })
    }

    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        b.group_norm(x, self.groups, &self.scale, &self.bias, self.eps)
    }
}

/// LayerNorm over the last axis with a learned scale and bias.
pub struct LayerNorm<B: Backend> {
    pub scale: B::Param,
    pub bias: B::Param,
    pub eps: f32,
}

impl<B: Backend> LayerNorm<B> {
    pub fn load(
        b: &B,
        src: &mut dyn ParamSource<B>,
        naming: Naming,
        prefix: &str,
        dim: usize,
        eps: f32,
    ) -> Result<Self> {
        Ok(LayerNorm {
            scale: src.param(b, &join(prefix, naming.norm_scale()), &[dim])?,
            bias: src.param(b, &join(prefix, "bias"), &[dim])?,
            eps,
        })
    }

    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        b.layer_norm(x, &self.scale, &self.bias, self.eps)
    }
}

/// The pointwise nonlinearity of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Silu,
    Mish,
}

impl Activation {
    pub fn forward<B: Backend>(self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        match self {
            Activation::Silu => b.silu(x),
            Activation::Mish => b.mish(x),
        }
    }
}
