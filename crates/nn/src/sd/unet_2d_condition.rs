//! diffusers' `UNet2DConditionModel`, the denoiser of Stable Diffusion: a time embedding, down
//! blocks (residual blocks, optional cross-attention transformers, a strided-conv downsampler),
//! a mid block, and up blocks that consume the skip connections in reverse.

use super::attention::{dims4, Transformer2dModel, TransformerSpec};
use super::config::{DownBlockType, UNet2DConditionConfig, UpBlockType};
use super::resample::{Downsample2d, Upsample2d};
use super::resnet::{ResnetBlock2d, ResnetSpec};
use crate::layers::Naming::Diffusers;
use crate::layers::{join, Conv2d, GroupNorm, Linear};
use crate::{Backend, ParamSource, Result};

/// Sinusoidal timestep features as diffusers' `Timesteps(dim, flip_sin_to_cos=True,
/// downscale_freq_shift=0)` computes them: `[cos(t w_i), sin(t w_i)]`, `w_i = 10000^(-i/half)`.
/// Timesteps are public, so this is plaintext work for every backend.
pub fn timestep_features(timesteps: &[f32], dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let freqs = (0..half).map(|i| (-(10000f64.ln()) * i as f64 / half as f64).exp());
        let args: Vec<f64> = freqs.map(|w| t as f64 * w).collect();
        out.extend(args.iter().map(|a| a.cos() as f32));
        out.extend(args.iter().map(|a| a.sin() as f32));
    }
    out
}

/// A down or up block: residual blocks, each optionally followed by a transformer, then an
/// optional resampler.
struct Block<B: Backend> {
    resnets: Vec<ResnetBlock2d<B>>,
    attentions: Vec<Transformer2dModel<B>>,
    downsampler: Option<Downsample2d<B>>,
    upsampler: Option<Upsample2d<B>>,
}

impl<B: Backend> Block<B> {
    fn layer(
        &self,
        b: &B,
        i: usize,
        x: &B::Tensor,
        temb: &B::Tensor,
        ctx: &B::Tensor,
    ) -> Result<B::Tensor> {
        let x = self.resnets[i].forward(b, x, Some(temb))?;
        match self.attentions.get(i) {
            Some(attn) => attn.forward(b, &x, ctx),
            None => Ok(x),
        }
    }
}

pub struct UNet2DConditionModel<B: Backend> {
    config: UNet2DConditionConfig,
    conv_in: Conv2d<B>,
    time_linear_1: Linear<B>,
    time_linear_2: Linear<B>,
    down_blocks: Vec<Block<B>>,
    mid_resnets: [ResnetBlock2d<B>; 2],
    mid_attention: Transformer2dModel<B>,
    up_blocks: Vec<Block<B>>,
    norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
}

impl<B: Backend> UNet2DConditionModel<B> {
    /// Builds the model, asking `src` for every parameter under diffusers' names after `prefix`
    /// (empty for a stand-alone `unet/diffusion_pytorch_model.safetensors`).
    pub fn new(
        backend: &B,
        src: &mut dyn ParamSource<B>,
        prefix: &str,
        config: &UNet2DConditionConfig,
    ) -> Result<Self> {
        config.validate()?;
        let c = config;
        let p = |n: &str| join(prefix, n);
        let boc = &c.block_out_channels;
        let temb_dim = 4 * boc[0];
        let resnet = |cin: usize, cout: usize| ResnetSpec {
            in_channels: cin,
            out_channels: cout,
            temb_channels: Some(temb_dim),
            groups: c.norm_num_groups,
            eps: c.norm_eps,
        };
        let transformer = |ch: usize| TransformerSpec {
            channels: ch,
            heads: c.attention_head_dim,
            context_dim: c.cross_attention_dim,
            layers: c.transformer_layers_per_block,
            groups: c.norm_num_groups,
            linear_projection: c.use_linear_projection,
        };

        let conv_in = Conv2d::load_same(
            backend,
            src,
            Diffusers,
            &p("conv_in"),
            (c.in_channels, boc[0]),
            3,
        )?;
        let time_linear_1 = Linear::load(
            backend,
            src,
            Diffusers,
            &p("time_embedding.linear_1"),
            (boc[0], temb_dim),
            true,
        )?;
        let time_linear_2 = Linear::load(
            backend,
            src,
            Diffusers,
            &p("time_embedding.linear_2"),
            (temb_dim, temb_dim),
            true,
        )?;

        let n = boc.len();
        let mut down_blocks = Vec::with_capacity(n);
        let mut out_ch = boc[0];
        for (i, kind) in c.down_block_types.iter().enumerate() {
            let bp = p(&format!("down_blocks.{i}"));
            let in_ch = out_ch;
            out_ch = boc[i];
            let mut block = Block {
                resnets: vec![],
                attentions: vec![],
                downsampler: None,
                upsampler: None,
            };
            for j in 0..c.layers_per_block {
                let cin = if j == 0 { in_ch } else { out_ch };
                block.resnets.push(ResnetBlock2d::new(
                    backend,
                    src,
                    &join(&bp, format!("resnets.{j}")),
                    resnet(cin, out_ch),
                )?);
                if *kind == DownBlockType::CrossAttnDownBlock2D {
                    block.attentions.push(Transformer2dModel::new(
                        backend,
                        src,
                        &join(&bp, format!("attentions.{j}")),
                        transformer(out_ch),
                    )?);
                }
            }
            if i + 1 < n {
                block.downsampler = Some(Downsample2d::new(
                    backend,
                    src,
                    &join(&bp, "downsamplers.0"),
                    out_ch,
                    false,
                )?);
            }
            down_blocks.push(block);
        }

        let mid = boc[n - 1];
        let mid_resnets = [
            ResnetBlock2d::new(backend, src, &p("mid_block.resnets.0"), resnet(mid, mid))?,
            ResnetBlock2d::new(backend, src, &p("mid_block.resnets.1"), resnet(mid, mid))?,
        ];
        let mid_attention =
            Transformer2dModel::new(backend, src, &p("mid_block.attentions.0"), transformer(mid))?;

        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut out_ch = rev[0];
        for (i, kind) in c.up_block_types.iter().enumerate() {
            let bp = p(&format!("up_blocks.{i}"));
            let prev_out = out_ch;
            out_ch = rev[i];
            let in_ch = rev[(i + 1).min(n - 1)];
            let layers = c.layers_per_block + 1;
            let mut block = Block {
                resnets: vec![],
                attentions: vec![],
                downsampler: None,
                upsampler: None,
            };
            for j in 0..layers {
                let skip = if j == layers - 1 { in_ch } else { out_ch };
                let cin = if j == 0 { prev_out } else { out_ch };
                block.resnets.push(ResnetBlock2d::new(
                    backend,
                    src,
                    &join(&bp, format!("resnets.{j}")),
                    resnet(cin + skip, out_ch),
                )?);
                if *kind == UpBlockType::CrossAttnUpBlock2D {
                    block.attentions.push(Transformer2dModel::new(
                        backend,
                        src,
                        &join(&bp, format!("attentions.{j}")),
                        transformer(out_ch),
                    )?);
                }
            }
            if i + 1 < n {
                block.upsampler = Some(Upsample2d::new(
                    backend,
                    src,
                    &join(&bp, "upsamplers.0"),
                    out_ch,
                )?);
            }
            up_blocks.push(block);
        }

        let norm_out = GroupNorm::load(
            backend,
            src,
            Diffusers,
            &p("conv_norm_out"),
            boc[0],
            c.norm_num_groups,
            c.norm_eps,
        )?;
        let conv_out = Conv2d::load_same(
            backend,
            src,
            Diffusers,
            &p("conv_out"),
            (boc[0], c.out_channels),
            3,
        )?;
        Ok(UNet2DConditionModel {
            config: c.clone(),
            conv_in,
            time_linear_1,
            time_linear_2,
            down_blocks,
            mid_resnets,
            mid_attention,
            up_blocks,
            norm_out,
            conv_out,
        })
    }

    pub fn config(&self) -> &UNet2DConditionConfig {
        &self.config
    }

    /// Predicts the noise in `sample` (N, C, H, W) at the public `timesteps` (one per sample),
    /// conditioned on the text encoder's `context` (N, L, cross_attention_dim).
    pub fn forward(
        &self,
        b: &B,
        sample: &B::Tensor,
        timesteps: &[f32],
        context: &B::Tensor,
    ) -> Result<B::Tensor> {
        let (n, _, _, _) = dims4(b, sample)?;
        if timesteps.len() != n {
            return Err(crate::Error::shape(
                "unet",
                format!("{} timesteps for a batch of {n}", timesteps.len()),
            ));
        }
        let dim = self.config.block_out_channels[0];
        let t = b.public(&[n, dim], &timestep_features(timesteps, dim))?;
        let temb = self.time_linear_1.forward(b, &t)?;
        let temb = self.time_linear_2.forward(b, &b.silu(&temb)?)?;

        let mut x = self.conv_in.forward(b, sample)?;
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            for i in 0..block.resnets.len() {
                x = block.layer(b, i, &x, &temb, context)?;
                skips.push(x.clone());
            }
            if let Some(down) = &block.downsampler {
                x = down.forward(b, &x)?;
                skips.push(x.clone());
            }
        }

        x = self.mid_resnets[0].forward(b, &x, Some(&temb))?;
        x = self.mid_attention.forward(b, &x, context)?;
        x = self.mid_resnets[1].forward(b, &x, Some(&temb))?;

        for block in &self.up_blocks {
            for i in 0..block.resnets.len() {
                let skip = skips
                    .pop()
                    .ok_or_else(|| crate::Error::shape("unet", "ran out of skip connections"))?;
                x = b.concat(&[&x, &skip], 1)?;
                x = block.layer(b, i, &x, &temb, context)?;
            }
            if let Some(up) = &block.upsampler {
                let size = skips.last().map(|s| {
                    let s = b.shape(s);
                    (s[2], s[3])
                });
                x = up.forward(b, &x, size)?;
            }
        }

        let x = b.silu(&self.norm_out.forward(b, &x)?)?;
        self.conv_out.forward(b, &x)
    }
}
