//! Layers shared by the architectures: plain structs holding their parameters, each with a
//! `forward`. `load` reads flax-named parameters (`<prefix>.kernel`, `.bias`, `.scale`,
//! `.embedding`) in the internal layout; other naming schemes build the structs directly.

use crate::{Backend, ConvSpec, Error, ParamSource, Result};

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A 2-D convolution: kernel (out, in, kh, kw), optional bias (out,).
pub struct Conv2d<B: Backend> {
    pub weight: B::Param,
    pub bias: Option<B::Param>,
    pub spec: ConvSpec,
}

impl<B: Backend> Conv2d<B> {
    pub fn load(
        b: &B,
        src: &mut impl ParamSource<B>,
        prefix: &str,
        (cin, cout): (usize, usize),
        kernel: usize,
        spec: ConvSpec,
    ) -> Result<Self> {
        Ok(Conv2d {
            weight: src.param(b, &join(prefix, "kernel"), &[cout, cin, kernel, kernel])?,
            bias: Some(src.param(b, &join(prefix, "bias"), &[cout])?),
            spec,
        })
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
        src: &mut impl ParamSource<B>,
        prefix: &str,
        (cin, cout): (usize, usize),
        kernel: usize,
        spec: ConvSpec,
    ) -> Result<Self> {
        Ok(ConvTranspose2d {
            weight: src.param(b, &join(prefix, "kernel"), &[cout, cin, kernel, kernel])?,
            bias: Some(src.param(b, &join(prefix, "bias"), &[cout])?),
            spec,
        })
    }

    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        b.conv_transpose2d(x, &self.weight, self.bias.as_ref(), self.spec)
    }
}

/// `x @ weight + bias`, weight (in, out).
pub struct Linear<B: Backend> {
    pub weight: B::Param,
    pub bias: Option<B::Param>,
}

impl<B: Backend> Linear<B> {
    pub fn load(
        b: &B,
        src: &mut impl ParamSource<B>,
        prefix: &str,
        (din, dout): (usize, usize),
    ) -> Result<Self> {
        Ok(Linear {
            weight: src.param(b, &join(prefix, "kernel"), &[din, dout])?,
            bias: Some(src.param(b, &join(prefix, "bias"), &[dout])?),
        })
    }

    /// An embedding table (classes, dim) used as a bias-free dense layer on one-hot rows, so that
    /// a secret label selects its row without anyone learning which.
    pub fn load_embedding(
        b: &B,
        src: &mut impl ParamSource<B>,
        prefix: &str,
        (classes, dim): (usize, usize),
    ) -> Result<Self> {
        Ok(Linear {
            weight: src.param(b, &join(prefix, "embedding"), &[classes, dim])?,
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
        src: &mut impl ParamSource<B>,
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
            scale: src.param(b, &join(prefix, "scale"), &[channels])?,
            bias: src.param(b, &join(prefix, "bias"), &[channels])?,
            groups,
            eps,
        })
    }

    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        b.group_norm(x, self.groups, &self.scale, &self.bias, self.eps)
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
