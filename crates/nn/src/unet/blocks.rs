//! The U-Net's blocks: the residual block (with time and class bias and optional attention) and
//! the single-head self-attention block, as CipherDM's flax code defines them.

use crate::layers::Naming::Flax;
use crate::layers::{Activation, Conv2d, GroupNorm, Linear};
use crate::{Backend, ConvSpec, ParamSource, Result};

/// Self-attention over the pixels of an NCHW map: GroupNorm, 1x1 conv to q|k|v, softmax(q k^T /
/// sqrt(C)) v, 1x1 conv out, plus the input.
pub struct AttentionBlock<B: Backend> {
    norm: GroupNorm<B>,
    to_qkv: Conv2d<B>,
    to_out: Conv2d<B>,
    channels: usize,
}

impl<B: Backend> AttentionBlock<B> {
    pub fn load(
        b: &B,
        src: &mut impl ParamSource<B>,
        prefix: &str,
        channels: usize,
        groups: usize,
        eps: f32,
    ) -> Result<Self> {
        Ok(AttentionBlock {
            norm: GroupNorm::load(
                b,
                src,
                Flax,
                &format!("{prefix}.norm"),
                channels,
                groups,
                eps,
            )?,
            to_qkv: Conv2d::load(
                b,
                src,
                Flax,
                &format!("{prefix}.to_qkv"),
                (channels, 3 * channels),
                1,
                ConvSpec::same(1),
            )?,
            to_out: Conv2d::load(
                b,
                src,
                Flax,
                &format!("{prefix}.to_out"),
                (channels, channels),
                1,
                ConvSpec::same(1),
            )?,
            channels,
        })
    }

    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let shape = b.shape(x);
        let (n, c, h, w) = (shape[0], self.channels, shape[2], shape[3]);
        let qkv = self.to_qkv.forward(b, &self.norm.forward(b, x)?)?;
        // (N, C, H, W) slice of q, k or v -> (N, H*W, C) tokens.
        let tokens = |i: usize| -> Result<B::Tensor> {
            let part = b.narrow(&qkv, 1, i * c, c)?;
            b.permute(&b.reshape(&part, &[n, c, h * w])?, &[0, 2, 1])
        };
        let (q, k, v) = (tokens(0)?, tokens(1)?, tokens(2)?);
        let scale = (c as f64).powf(-0.5) as f32;
        let out = b.attention(&q, &k, &v, scale, false)?;
        let out = b.reshape(&b.permute(&out, &[0, 2, 1])?, &[n, c, h, w])?;
        b.add(&self.to_out.forward(b, &out)?, x)
    }
}

/// What every residual block of one forward pass shares: act(time embedding) (N, time_emb_dim)
/// and the one-hot labels (N, classes), if the model is class-conditional.
pub struct Conditioning<'a, B: Backend> {
    pub time: B::Tensor,
    pub labels: Option<&'a B::Tensor>,
}

pub struct ResidualBlock<B: Backend> {
    norm_1: GroupNorm<B>,
    conv_1: Conv2d<B>,
    time_bias: Linear<B>,
    class_bias: Option<Linear<B>>,
    norm_2: GroupNorm<B>,
    conv_2: Conv2d<B>,
    /// 1x1 convolution on the skip path when the channel count changes.
    skip: Option<Conv2d<B>>,
    attention: Option<AttentionBlock<B>>,
    activation: Activation,
    out_channels: usize,
}

/// Static description of one residual block (everything but its parameters).
pub struct ResidualSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub time_emb_dim: usize,
    pub num_classes: Option<usize>,
    pub groups: usize,
    pub eps: f32,
    pub attention: bool,
    pub activation: Activation,
}

impl<B: Backend> ResidualBlock<B> {
    pub fn load(
        b: &B,
        src: &mut impl ParamSource<B>,
        prefix: &str,
        spec: &ResidualSpec,
    ) -> Result<Self> {
        let (cin, cout) = (spec.in_channels, spec.out_channels);
        let p = |name: &str| format!("{prefix}.{name}");
        Ok(ResidualBlock {
            norm_1: GroupNorm::load(b, src, Flax, &p("GroupNorm_0"), cin, spec.groups, spec.eps)?,
            conv_1: Conv2d::load(
                b,
                src,
                Flax,
                &p("Conv_0"),
                (cin, cout),
                3,
                ConvSpec::same(1),
            )?,
            time_bias: Linear::load(b, src, Flax, &p("Dense_0"), (spec.time_emb_dim, cout), true)?,
            class_bias: spec
                .num_classes
                .map(|k| Linear::load_embedding(b, src, Flax, &p("Embed_0"), (k, cout)))
                .transpose()?,
            norm_2: GroupNorm::load(b, src, Flax, &p("GroupNorm_1"), cout, spec.groups, spec.eps)?,
            conv_2: Conv2d::load(
                b,
                src,
                Flax,
                &p("Conv_1"),
                (cout, cout),
                3,
                ConvSpec::same(1),
            )?,
            skip: (cin != cout)
                .then(|| {
                    Conv2d::load(
                        b,
                        src,
                        Flax,
                        &p("Conv_2"),
                        (cin, cout),
                        1,
                        ConvSpec::same(1),
                    )
                })
                .transpose()?,
            attention: spec
                .attention
                .then(|| {
                    AttentionBlock::load(
                        b,
                        src,
                        &p("AttentionBlock_0"),
                        cout,
                        spec.groups,
                        spec.eps,
                    )
                })
                .transpose()?,
            activation: spec.activation,
            out_channels: cout,
        })
    }

    pub fn forward(&self, b: &B, x: &B::Tensor, cond: &Conditioning<'_, B>) -> Result<B::Tensor> {
        let act = self.activation;
        let h = self
            .conv_1
            .forward(b, &act.forward(b, &self.norm_1.forward(b, x)?)?)?;
        // Time and class biases are per (sample, channel): add them first, broadcast once.
        let mut bias = self.time_bias.forward(b, &cond.time)?;
        if let (Some(class_bias), Some(labels)) = (&self.class_bias, cond.labels) {
            bias = b.add(&bias, &class_bias.forward(b, labels)?)?;
        }
        let n = b.shape(&bias)[0];
        let h = b.add(&h, &b.reshape(&bias, &[n, self.out_channels, 1, 1])?)?;
        let h = self
            .conv_2
            .forward(b, &act.forward(b, &self.norm_2.forward(b, &h)?)?)?;
        let h = match &self.skip {
            Some(skip) => b.add(&h, &skip.forward(b, x)?)?,
            None => b.add(&h, x)?,
        };
        match &self.attention {
            Some(attention) => attention.forward(b, &h),
            None => Ok(h),
        }
    }
}
