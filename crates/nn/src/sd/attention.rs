//! Attention as diffusers and CLIP build it: multi-head attention over (N, L, C) tokens, the
//! Transformer2D block of the U-Net (self-attention, cross-attention to the text, GEGLU
//! feed-forward) and the single-head spatial attention of the VAE's mid block.

use crate::layers::Naming::Diffusers;
use crate::layers::{join, Conv2d, GroupNorm, LayerNorm, Linear};
use crate::{Backend, ParamSource, Result};

/// diffusers' `Attention` (and CLIP's, with other projection names): project, split into heads,
/// scaled dot-product attention, merge heads, project out.
pub struct MultiHeadAttention<B: Backend> {
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    out: Linear<B>,
    heads: usize,
    causal: bool,
}

/// How a `MultiHeadAttention` names its projections and whether they have biases.
#[derive(Clone, Copy, Debug)]
pub struct AttentionSpec {
    pub query_dim: usize,
    pub context_dim: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub qkv_bias: bool,
    pub causal: bool,
    /// `true`: CLIP's `q_proj, k_proj, v_proj, out_proj`; `false`: diffusers' `to_q, ..., to_out.0`.
    pub clip_names: bool,
}

impl<B: Backend> MultiHeadAttention<B> {
    pub fn new(
        backend: &B,
        src: &mut dyn ParamSource<B>,
        prefix: &str,
        s: AttentionSpec,
    ) -> Result<Self> {
        let inner = s.heads * s.head_dim;
        let names: [&str; 4] = if s.clip_names {
            ["q_proj", "k_proj", "v_proj", "out_proj"]
        } else {
            ["to_q", "to_k", "to_v", "to_out.0"]
        };
        let p = |n: &str| join(prefix, n);
        Ok(MultiHeadAttention {
            q: Linear::load(
                backend,
                src,
                Diffusers,
                &p(names[0]),
                (s.query_dim, inner),
                s.qkv_bias,
            )?,
            k: Linear::load(
                backend,
                src,
                Diffusers,
                &p(names[1]),
                (s.context_dim, inner),
                s.qkv_bias,
            )?,
            v: Linear::load(
                backend,
                src,
                Diffusers,
                &p(names[2]),
                (s.context_dim, inner),
                s.qkv_bias,
            )?,
            out: Linear::load(
                backend,
                src,
                Diffusers,
                &p(names[3]),
                (inner, s.query_dim),
                true,
            )?,
            heads: s.heads,
            causal: s.causal,
        })
    }

    /// `x` is (N, L, C); `context` (N, S, C_ctx) or `None` for self-attention.
    pub fn forward(&self, b: &B, x: &B::Tensor, context: Option<&B::Tensor>) -> Result<B::Tensor> {
        let ctx = context.unwrap_or(x);
        let q = self.q.forward(b, x)?;
        let k = self.k.forward(b, ctx)?;
        let v = self.v.forward(b, ctx)?;
        let (n, l, inner) = dims3(b, &q)?;
        let s = b.shape(&k)[1];
        let d = inner / self.heads;
        let split = |t: &B::Tensor, len: usize| -> Result<B::Tensor> {
            let t = b.reshape(t, &[n, len, self.heads, d])?;
            let t = b.permute(&t, &[0, 2, 1, 3])?;
            b.reshape(&t, &[n * self.heads, len, d])
        };
        let (q, k, v) = (split(&q, l)?, split(&k, s)?, split(&v, s)?);
        let o = b.attention(&q, &k, &v, 1.0 / (d as f32).sqrt(), self.causal)?;
        let o = b.reshape(&o, &[n, self.heads, l, d])?;
        let o = b.permute(&o, &[0, 2, 1, 3])?;
        let o = b.reshape(&o, &[n, l, inner])?;
        self.out.forward(b, &o)
    }
}

pub(crate) fn dims3<B: Backend>(b: &B, x: &B::Tensor) -> Result<(usize, usize, usize)> {
    match b.shape(x)[..] {
        [n, l, c] => Ok((n, l, c)),
        ref s => Err(crate::Error::shape(
            "attention",
            format!("expected (N, L, C), got {s:?}"),
        )),
    }
}

pub(crate) fn dims4<B: Backend>(b: &B, x: &B::Tensor) -> Result<(usize, usize, usize, usize)> {
    match b.shape(x)[..] {
        [n, c, h, w] => Ok((n, c, h, w)),
        ref s => Err(crate::Error::shape(
            "block",
            format!("expected NCHW, got {s:?}"),
        )),
    }
}

/// GEGLU feed-forward (`ff.net.0.proj`, `ff.net.2`): `W2 (a * gelu(g))` with `[a, g] = W1 x`.
/// diffusers uses the erf GeLU here; the trait's tanh GeLU differs from it by < 1e-3.
pub struct FeedForward<B: Backend> {
    proj: Linear<B>,
    out: Linear<B>,
    inner: usize,
}

impl<B: Backend> FeedForward<B> {
    pub fn new(
        backend: &B,
        src: &mut dyn ParamSource<B>,
        prefix: &str,
        dim: usize,
    ) -> Result<Self> {
        let inner = 4 * dim;
        Ok(FeedForward {
            proj: Linear::load(
                backend,
                src,
                Diffusers,
                &join(prefix, "net.0.proj"),
                (dim, 2 * inner),
                true,
            )?,
            out: Linear::load(
                backend,
                src,
                Diffusers,
                &join(prefix, "net.2"),
                (inner, dim),
                true,
            )?,
            inner,
        })
    }

    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let h = self.proj.forward(b, x)?;
        let axis = b.shape(&h).len() - 1;
        let a = b.narrow(&h, axis, 0, self.inner)?;
        let g = b.narrow(&h, axis, self.inner, self.inner)?;
        self.out.forward(b, &b.mul(&a, &b.gelu(&g)?)?)
    }
}

/// diffusers' `BasicTransformerBlock`: pre-LayerNorm self-attention, cross-attention, GEGLU.
pub struct BasicTransformerBlock<B: Backend> {
    norm1: LayerNorm<B>,
    attn1: MultiHeadAttention<B>,
    norm2: LayerNorm<B>,
    attn2: MultiHeadAttention<B>,
    norm3: LayerNorm<B>,
    ff: FeedForward<B>,
}

impl<B: Backend> BasicTransformerBlock<B> {
    pub fn new(
        backend: &B,
        src: &mut dyn ParamSource<B>,
        prefix: &str,
        dim: usize,
        heads: usize,
        context_dim: usize,
    ) -> Result<Self> {
        let p = |n: &str| join(prefix, n);
        let spec = AttentionSpec {
            query_dim: dim,
            context_dim: dim,
            heads,
            head_dim: dim / heads,
            qkv_bias: false,
            causal: false,
            clip_names: false,
        };
        Ok(BasicTransformerBlock {
            norm1: LayerNorm::load(backend, src, Diffusers, &p("norm1"), dim, 1e-5)?,
            attn1: MultiHeadAttention::new(backend, src, &p("attn1"), spec)?,
            norm2: LayerNorm::load(backend, src, Diffusers, &p("norm2"), dim, 1e-5)?,
            attn2: MultiHeadAttention::new(
                backend,
                src,
                &p("attn2"),
                AttentionSpec {
                    context_dim,
                    ..spec
                },
            )?,
            norm3: LayerNorm::load(backend, src, Diffusers, &p("norm3"), dim, 1e-5)?,
            ff: FeedForward::new(backend, src, &p("ff"), dim)?,
        })
    }

    pub fn forward(&self, b: &B, x: &B::Tensor, context: &B::Tensor) -> Result<B::Tensor> {
        let x = b.add(&self.attn1.forward(b, &self.norm1.forward(b, x)?, None)?, x)?;
        let x = b.add(
            &self
                .attn2
                .forward(b, &self.norm2.forward(b, &x)?, Some(context))?,
            &x,
        )?;
        b.add(&self.ff.forward(b, &self.norm3.forward(b, &x)?)?, &x)
    }
}

/// The input and output projections of a `Transformer2DModel`: 1x1 convs (SD 1.x) or linears
/// (SD 2.x, `use_linear_projection`).
enum Projection<B: Backend> {
    Conv(Conv2d<B>),
    Linear(Linear<B>),
}

/// diffusers' `Transformer2DModel`: GroupNorm, project in, transformer blocks over the H*W
/// tokens, project out, residual.
pub struct Transformer2dModel<B: Backend> {
    norm: GroupNorm<B>,
    proj_in: Projection<B>,
    blocks: Vec<BasicTransformerBlock<B>>,
    proj_out: Projection<B>,
}

/// Shape of one `Transformer2DModel`.
#[derive(Clone, Copy, Debug)]
pub struct TransformerSpec {
    pub channels: usize,
    pub heads: usize,
    pub context_dim: usize,
    pub layers: usize,
    pub groups: usize,
    pub linear_projection: bool,
}

impl<B: Backend> Transformer2dModel<B> {
    pub fn new(
        backend: &B,
        src: &mut dyn ParamSource<B>,
        prefix: &str,
        s: TransformerSpec,
    ) -> Result<Self> {
        if s.heads == 0 || !s.channels.is_multiple_of(s.heads) {
            return Err(crate::Error::Config(format!(
                "{prefix}: {} channels cannot be split into {} heads",
                s.channels, s.heads
            )));
        }
        let p = |n: &str| join(prefix, n);
        let c = s.channels;
        let mut proj = |name: &str| -> Result<Projection<B>> {
            Ok(if s.linear_projection {
                Projection::Linear(Linear::load(
                    backend,
                    src,
                    Diffusers,
                    &p(name),
                    (c, c),
                    true,
                )?)
            } else {
                Projection::Conv(Conv2d::load_same(
                    backend,
                    src,
                    Diffusers,
                    &p(name),
                    (c, c),
                    1,
                )?)
            })
        };
        let proj_in = proj("proj_in")?;
        let proj_out = proj("proj_out")?;
        let norm = GroupNorm::load(backend, src, Diffusers, &p("norm"), c, s.groups, 1e-6)?;
        let blocks = (0..s.layers)
            .map(|i| {
                BasicTransformerBlock::new(
                    backend,
                    src,
                    &p(&format!("transformer_blocks.{i}")),
                    c,
                    s.heads,
                    s.context_dim,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Transformer2dModel {
            norm,
            proj_in,
            blocks,
            proj_out,
        })
    }

    pub fn forward(&self, b: &B, x: &B::Tensor, context: &B::Tensor) -> Result<B::Tensor> {
        let (n, c, h, w) = dims4(b, x)?;
        let to_tokens = |t: &B::Tensor| -> Result<B::Tensor> {
            let t = b.permute(t, &[0, 2, 3, 1])?;
            b.reshape(&t, &[n, h * w, c])
        };
        let to_map = |t: &B::Tensor| -> Result<B::Tensor> {
            let t = b.reshape(t, &[n, h, w, c])?;
            b.permute(&t, &[0, 3, 1, 2])
        };
        let normed = self.norm.forward(b, x)?;
        let mut t = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(&conv.forward(b, &normed)?)?,
            Projection::Linear(lin) => lin.forward(b, &to_tokens(&normed)?)?,
        };
        for block in &self.blocks {
            t = block.forward(b, &t, context)?;
        }
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(b, &to_map(&t)?)?,
            Projection::Linear(lin) => to_map(&lin.forward(b, &t)?)?,
        };
        b.add(&out, x)
    }
}

/// The VAE mid block's spatial self-attention: GroupNorm, one head over the H*W positions,
/// residual (diffusers `Attention` with `group_norm`, `to_q/k/v` with bias).
pub struct SpatialSelfAttention<B: Backend> {
    norm: GroupNorm<B>,
    attn: MultiHeadAttention<B>,
}

impl<B: Backend> SpatialSelfAttention<B> {
    pub fn new(
        backend: &B,
        src: &mut dyn ParamSource<B>,
        prefix: &str,
        channels: usize,
        groups: usize,
        eps: f32,
    ) -> Result<Self> {
        Ok(SpatialSelfAttention {
            norm: GroupNorm::load(
                backend,
                src,
                Diffusers,
                &join(prefix, "group_norm"),
                channels,
                groups,
                eps,
            )?,
            attn: MultiHeadAttention::new(
                backend,
                src,
                prefix,
                AttentionSpec {
                    query_dim: channels,
                    context_dim: channels,
                    heads: 1,
                    head_dim: channels,
                    qkv_bias: true,
                    causal: false,
                    clip_names: false,
                },
            )?,
        })
    }

    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let (n, c, h, w) = dims4(b, x)?;
        let t = self.norm.forward(b, x)?;
        let t = b.permute(&b.reshape(&t, &[n, c, h * w])?, &[0, 2, 1])?;
        let t = self.attn.forward(b, &t, None)?;
        let t = b.reshape(&b.permute(&t, &[0, 2, 1])?, &[n, c, h, w])?;
        b.add(&t, x)
    }
}
