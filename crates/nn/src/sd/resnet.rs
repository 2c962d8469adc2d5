//! diffusers' `ResnetBlock2D`: GroupNorm, SiLU, conv, (+ projected time embedding), GroupNorm,
//! SiLU, conv, plus a 1x1-conv shortcut when the channel count changes.

use crate::layers::Naming::Diffusers;
use crate::layers::{join, Conv2d, GroupNorm, Linear};
use crate::{Backend, ParamSource, Result};

pub struct ResnetBlock2d<B: Backend> {
    norm1: GroupNorm<B>,
    conv1: Conv2d<B>,
    time_emb_proj: Option<Linear<B>>,
    norm2: GroupNorm<B>,
    conv2: Conv2d<B>,
    conv_shortcut: Option<Conv2d<B>>,
}

/// Shape of one residual block.
#[derive(Clone, Copy, Debug)]
pub struct ResnetSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Width of the time embedding, or `None` in the VAE (no time input).
    pub temb_channels: Option<usize>,
    pub groups: usize,
    pub eps: f32,
}

impl<B: Backend> ResnetBlock2d<B> {
    pub fn new(
        backend: &B,
        src: &mut dyn ParamSource<B>,
        prefix: &str,
        spec: ResnetSpec,
    ) -> Result<Self> {
        let (cin, cout) = (spec.in_channels, spec.out_channels);
        let p = |n: &str| join(prefix, n);
        Ok(ResnetBlock2d {
            norm1: GroupNorm::load(
                backend,
                src,
                Diffusers,
                &p("norm1"),
                cin,
                spec.groups,
                spec.eps,
            )?,
            conv1: Conv2d::load_same(backend, src, Diffusers, &p("conv1"), (cin, cout), 3)?,
            time_emb_proj: match spec.temb_channels {
                Some(t) => Some(Linear::load(
                    backend,
                    src,
                    Diffusers,
                    &p("time_emb_proj"),
                    (t, cout),
                    true,
                )?),
                None => None,
            },
            norm2: GroupNorm::load(
                backend,
                src,
                Diffusers,
                &p("norm2"),
                cout,
                spec.groups,
                spec.eps,
            )?,
            conv2: Conv2d::load_same(backend, src, Diffusers, &p("conv2"), (cout, cout), 3)?,
            conv_shortcut: if cin != cout {
                Some(Conv2d::load_same(
                    backend,
                    src,
                    Diffusers,
                    &p("conv_shortcut"),
                    (cin, cout),
                    1,
                )?)
            } else {
                None
            },
        })
    }

    /// `x` is NCHW; `temb` is the (N, T) time embedding *before* its SiLU (as diffusers passes it).
    pub fn forward(&self, b: &B, x: &B::Tensor, temb: Option<&B::Tensor>) -> Result<B::Tensor> {
        let h = b.silu(&self.norm1.forward(b, x)?)?;
        let mut h = self.conv1.forward(b, &h)?;
        if let (Some(proj), Some(t)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(b, &b.silu(t)?)?;
            let s = b.shape(&t);
            let t = b.reshape(&t, &[s[0], s[1], 1, 1])?;
            h = b.add(&h, &t)?;
        }
        let h = b.silu(&self.norm2.forward(b, &h)?)?;
        let h = self.conv2.forward(b, &h)?;
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(b, x)?,
            None => x.clone(),
        };
        b.add(&shortcut, &h)
    }
}
