//! A CLIP-style text transformer (`CLIPTextModel`'s `text_model`): token and position embeddings,
//! pre-LayerNorm blocks with causal self-attention and a GeLU MLP, a final LayerNorm. Its output
//! (N, L, D) is the context the U-Net cross-attends to.

use super::attention::{dims3, AttentionSpec, MultiHeadAttention};
use super::config::{Activation, ClipTextConfig};
use crate::layers::Naming::Diffusers;
use crate::layers::{join, LayerNorm, Linear};
use crate::{Backend, ParamSource, Result};

struct EncoderLayer<B: Backend> {
    layer_norm1: LayerNorm<B>,
    self_attn: MultiHeadAttention<B>,
    layer_norm2: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
}

pub struct ClipTextTransformer<B: Backend> {
    config: ClipTextConfig,
    token_embedding: B::Param,
    position_embedding: B::Param,
    layers: Vec<EncoderLayer<B>>,
    final_layer_norm: LayerNorm<B>,
}

impl<B: Backend> ClipTextTransformer<B> {
    /// `prefix` is `text_model` in a diffusers `text_encoder/model.safetensors`.
    pub fn new(
        backend: &B,
        src: &mut dyn ParamSource<B>,
        prefix: &str,
        config: &ClipTextConfig,
    ) -> Result<Self> {
        config.validate()?;
        let c = config;
        let d = c.hidden_size;
        let p = |n: &str| join(prefix, n);
        let token_embedding = src.param(
            backend,
            &p("embeddings.token_embedding.weight"),
            &[c.vocab_size, d],
        )?;
        let position_embedding = src.param(
            backend,
            &p("embeddings.position_embedding.weight"),
            &[c.max_position_embeddings, d],
        )?;
        let eps = c.layer_norm_eps;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let lp = p(&format!("encoder.layers.{i}"));
                let q = |n: &str| join(&lp, n);
                Ok(EncoderLayer {
                    layer_norm1: LayerNorm::load(
                        backend,
                        src,
                        Diffusers,
                        &q("layer_norm1"),
                        d,
                        eps,
                    )?,
                    self_attn: MultiHeadAttention::new(
                        backend,
                        src,
                        &q("self_attn"),
                        AttentionSpec {
                            query_dim: d,
                            context_dim: d,
                            heads: c.num_attention_heads,
                            head_dim: d / c.num_attention_heads,
                            qkv_bias: true,
                            causal: true,
                            clip_names: true,
                        },
                    )?,
                    layer_norm2: LayerNorm::load(
                        backend,
                        src,
                        Diffusers,
                        &q("layer_norm2"),
                        d,
                        eps,
                    )?,
                    fc1: Linear::load(
                        backend,
                        src,
                        Diffusers,
                        &q("mlp.fc1"),
                        (d, c.intermediate_size),
                        true,
                    )?,
                    fc2: Linear::load(
                        backend,
                        src,
                        Diffusers,
                        &q("mlp.fc2"),
                        (c.intermediate_size, d),
                        true,
                    )?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(ClipTextTransformer {
            config: c.clone(),
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm: LayerNorm::load(
                backend,
                src,
                Diffusers,
                &p("final_layer_norm"),
                d,
                eps,
            )?,
        })
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// The last hidden state (N, L, D) for one-hot token rows (N, L, vocab). The one-hot rows are
    /// an input like any other, so a secret prompt stays secret through the embedding.
    pub fn forward(&self, b: &B, one_hot: &B::Tensor) -> Result<B::Tensor> {
        let (n, l, v) = dims3(b, one_hot)?;
        let c = &self.config;
        if v != c.vocab_size || l > c.max_position_embeddings {
            return Err(crate::Error::shape(
                "clip_text",
                format!(
                    "tokens ({n}, {l}, {v}) do not fit vocab {} / max length {}",
                    c.vocab_size, c.max_position_embeddings
                ),
            ));
        }
        let tokens = b.linear(one_hot, &self.token_embedding, None)?;
        let pos = b.narrow(&b.param_tensor(&self.position_embedding)?, 0, 0, l)?;
        let pos = b.reshape(&pos, &[1, l, c.hidden_size])?;
        let mut x = b.add(&tokens, &pos)?;
        for layer in &self.layers {
            let h = layer.layer_norm1.forward(b, &x)?;
            x = b.add(&x, &layer.self_attn.forward(b, &h, None)?)?;
            let h = layer.fc1.forward(b, &layer.layer_norm2.forward(b, &x)?)?;
            let h = match c.hidden_act {
                Activation::Gelu => b.gelu(&h)?,
                Activation::QuickGelu => b.scale(&b.silu(&b.scale(&h, 1.702)?)?, 1.0 / 1.702)?,
            };
            x = b.add(&x, &layer.fc2.forward(b, &h)?)?;
        }
        self.final_layer_norm.forward(b, &x)
    }
}

/// One-hot rows (N * L * vocab values) for token ids; ids must be below `vocab`.
pub fn one_hot(ids: &[Vec<u32>], vocab: usize) -> Result<Vec<f32>> {
    let mut out = vec![];
    for row in ids {
        for &id in row {
            let id = id as usize;
            if id >= vocab {
                return Err(crate::Error::Config(format!(
                    "token id {id} is outside the vocabulary of {vocab}"
                )));
            }
            let start = out.len();
            out.resize(start + vocab, 0.0);
            out[start + id] = 1.0;
        }
    }
    Ok(out)
}
