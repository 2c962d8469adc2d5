//! diffusers' `AutoencoderKL`, the VAE of Stable Diffusion: an encoder from pixels to the mean and
//! log-variance of a latent Gaussian, and a decoder from latents back to pixels. Both have
//! residual down/up blocks and a mid block with one spatial self-attention.

use super::attention::SpatialSelfAttention;
use super::config::AutoencoderKLConfig;
use super::resample::{Downsample2d, Upsample2d};
use super::resnet::{ResnetBlock2d, ResnetSpec};
use crate::layers::Naming::Diffusers;
use crate::layers::{join, Conv2d, GroupNorm};
use crate::{Backend, ParamSource, Result};

/// The VAE's norms use eps 1e-6, as diffusers does.
const VAE_EPS: f32 = 1e-6;

/// `UNetMidBlock2D` without time input: resnet, attention, resnet.
struct MidBlock<B: Backend> {
    resnets: [ResnetBlock2d<B>; 2],
    attention: SpatialSelfAttention<B>,
}

impl<B: Backend> MidBlock<B> {
    fn new(
        backend: &B,
        src: &mut dyn ParamSource<B>,
        prefix: &str,
        ch: usize,
        groups: usize,
    ) -> Result<Self> {
        let spec = ResnetSpec {
            in_channels: ch,
            out_channels: ch,
            temb_channels: None,
            groups,
            eps: VAE_EPS,
        };
        Ok(MidBlock {
            resnets: [
                ResnetBlock2d::new(backend, src, &join(prefix, "resnets.0"), spec)?,
                ResnetBlock2d::new(backend, src, &join(prefix, "resnets.1"), spec)?,
            ],
            attention: SpatialSelfAttention::new(
                backend,
                src,
                &join(prefix, "attentions.0"),
                ch,
                groups,
                VAE_EPS,
            )?,
        })
    }

    fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let x = self.resnets[0].forward(b, x, None)?;
        let x = self.attention.forward(b, &x)?;
        self.resnets[1].forward(b, &x, None)
    }
}

fn resnets<B: Backend>(
    backend: &B,
    src: &mut dyn ParamSource<B>,
    prefix: &str,
    count: usize,
    (cin, cout): (usize, usize),
    groups: usize,
) -> Result<Vec<ResnetBlock2d<B>>> {
    (0..count)
        .map(|j| {
            let spec = ResnetSpec {
                in_channels: if j == 0 { cin } else { cout },
                out_channels: cout,
                temb_channels: None,
                groups,
                eps: VAE_EPS,
            };
            ResnetBlock2d::new(backend, src, &join(prefix, format!("resnets.{j}")), spec)
        })
        .collect()
}

/// One resolution level: its residual blocks and the resampler after them (none at the end).
type Level<B, R> = (Vec<ResnetBlock2d<B>>, Option<R>);

pub struct Encoder<B: Backend> {
    conv_in: Conv2d<B>,
    down: Vec<Level<B, Downsample2d<B>>>,
    mid: MidBlock<B>,
    norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
}

impl<B: Backend> Encoder<B> {
    fn new(
        backend: &B,
        src: &mut dyn ParamSource<B>,
        prefix: &str,
        c: &AutoencoderKLConfig,
    ) -> Result<Self> {
        let p = |n: &str| join(prefix, n);
        let boc = &c.block_out_channels;
        let g = c.norm_num_groups;
        let conv_in = Conv2d::load_same(
            backend,
            src,
            Diffusers,
            &p("conv_in"),
            (c.in_channels, boc[0]),
            3,
        )?;
        let mut down = vec![];
        let mut out_ch = boc[0];
        for (i, &ch) in boc.iter().enumerate() {
            let bp = p(&format!("down_blocks.{i}"));
            let in_ch = out_ch;
            out_ch = ch;
            let rs = resnets(backend, src, &bp, c.layers_per_block, (in_ch, out_ch), g)?;
            let ds = if i + 1 < boc.len() {
                Some(Downsample2d::new(
                    backend,
                    src,
                    &join(&bp, "downsamplers.0"),
                    out_ch,
                    true,
                )?)
            } else {
                None
            };
            down.push((rs, ds));
        }
        let top = *boc.last().unwrap_or(&0);
        Ok(Encoder {
            conv_in,
            down,
            mid: MidBlock::new(backend, src, &p("mid_block"), top, g)?,
            norm_out: GroupNorm::load(
                backend,
                src,
                Diffusers,
                &p("conv_norm_out"),
                top,
                g,
                VAE_EPS,
            )?,
            conv_out: Conv2d::load_same(
                backend,
                src,
                Diffusers,
                &p("conv_out"),
                (top, 2 * c.latent_channels),
                3,
            )?,
        })
    }

    fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let mut x = self.conv_in.forward(b, x)?;
        for (rs, ds) in &self.down {
            for r in rs {
                x = r.forward(b, &x, None)?;
            }
            if let Some(d) = ds {
                x = d.forward(b, &x)?;
            }
        }
        let x = self.mid.forward(b, &x)?;
        let x = b.silu(&self.norm_out.forward(b, &x)?)?;
        self.conv_out.forward(b, &x)
    }
}

pub struct Decoder<B: Backend> {
    conv_in: Conv2d<B>,
    mid: MidBlock<B>,
    up: Vec<Level<B, Upsample2d<B>>>,
    norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
}

impl<B: Backend> Decoder<B> {
    fn new(
        backend: &B,
        src: &mut dyn ParamSource<B>,
        prefix: &str,
        c: &AutoencoderKLConfig,
    ) -> Result<Self> {
        let p = |n: &str| join(prefix, n);
        let rev: Vec<usize> = c.block_out_channels.iter().rev().copied().collect();
        let g = c.norm_num_groups;
        let conv_in = Conv2d::load_same(
            backend,
            src,
            Diffusers,
            &p("conv_in"),
            (c.latent_channels, rev[0]),
            3,
        )?;
        let mid = MidBlock::new(backend, src, &p("mid_block"), rev[0], g)?;
        let mut up = vec![];
        let mut out_ch = rev[0];
        for (i, &ch) in rev.iter().enumerate() {
            let bp = p(&format!("up_blocks.{i}"));
            let prev = out_ch;
            out_ch = ch;
            let rs = resnets(backend, src, &bp, c.layers_per_block + 1, (prev, out_ch), g)?;
            let us = if i + 1 < rev.len() {
                Some(Upsample2d::new(
                    backend,
                    src,
                    &join(&bp, "upsamplers.0"),
                    out_ch,
                )?)
            } else {
                None
            };
            up.push((rs, us));
        }
        let bottom = c.block_out_channels[0];
        Ok(Decoder {
            conv_in,
            mid,
            up,
            norm_out: GroupNorm::load(
                backend,
                src,
                Diffusers,
                &p("conv_norm_out"),
                bottom,
                g,
                VAE_EPS,
            )?,
            conv_out: Conv2d::load_same(
                backend,
                src,
                Diffusers,
                &p("conv_out"),
                (bottom, c.out_channels),
                3,
            )?,
        })
    }

    fn forward(&self, b: &B, z: &B::Tensor) -> Result<B::Tensor> {
        let x = self.conv_in.forward(b, z)?;
        let mut x = self.mid.forward(b, &x)?;
        for (rs, us) in &self.up {
            for r in rs {
                x = r.forward(b, &x, None)?;
            }
            if let Some(u) = us {
                x = u.forward(b, &x, None)?;
            }
        }
        let x = b.silu(&self.norm_out.forward(b, &x)?)?;
        self.conv_out.forward(b, &x)
    }
}

/// Which halves of the VAE to build: a client that only decodes needs no encoder weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VaeParts {
    Both,
    DecoderOnly,
}

pub struct AutoencoderKL<B: Backend> {
    config: AutoencoderKLConfig,
    encoder: Option<(Encoder<B>, Conv2d<B>)>,
    post_quant_conv: Conv2d<B>,
    decoder: Decoder<B>,
}

impl<B: Backend> AutoencoderKL<B> {
    pub fn new(
        backend: &B,
        src: &mut dyn ParamSource<B>,
        prefix: &str,
        config: &AutoencoderKLConfig,
        parts: VaeParts,
    ) -> Result<Self> {
        config.validate()?;
        let p = |n: &str| join(prefix, n);
        let l = config.latent_channels;
        let encoder = match parts {
            VaeParts::Both => Some((
                Encoder::new(backend, src, &p("encoder"), config)?,
                Conv2d::load_same(backend, src, Diffusers, &p("quant_conv"), (2 * l, 2 * l), 1)?,
            )),
            VaeParts::DecoderOnly => None,
        };
        Ok(AutoencoderKL {
            config: config.clone(),
            encoder,
            post_quant_conv: Conv2d::load_same(
                backend,
                src,
                Diffusers,
                &p("post_quant_conv"),
                (l, l),
                1,
            )?,
            decoder: Decoder::new(backend, src, &p("decoder"), config)?,
        })
    }

    pub fn config(&self) -> &AutoencoderKLConfig {
        &self.config
    }

    /// The mean and log-variance of the latent posterior of images `x` (N, C, H, W) in [-1, 1].
    pub fn encode(&self, b: &B, x: &B::Tensor) -> Result<(B::Tensor, B::Tensor)> {
        let (enc, quant) = self.encoder.as_ref().ok_or_else(|| {
            crate::Error::Config("this AutoencoderKL was built without its encoder".into())
        })?;
        let moments = quant.forward(b, &enc.forward(b, x)?)?;
        let l = self.config.latent_channels;
        Ok((b.narrow(&moments, 1, 0, l)?, b.narrow(&moments, 1, l, l)?))
    }

    /// Images in (about) [-1, 1] from unscaled latents.
    pub fn decode(&self, b: &B, z: &B::Tensor) -> Result<B::Tensor> {
        let z = self.post_quant_conv.forward(b, z)?;
        self.decoder.forward(b, &z)
    }
}
