//! The configuration of the CipherDM U-Net family (the `[unet]` table of a model's config.toml).

use serde::{Deserialize, Serialize};

use crate::layers::Activation;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Channels of the image (1 for MNIST, 3 for RGB, 4 for an SD latent).
    pub img_channels: usize,
    /// Channels of the first level; level i has `base_channels * channel_mults[i]`.
    pub base_channels: usize,
    pub channel_mults: Vec<usize>,
    /// Residual blocks per level on the way down (the way up has one more per level).
    pub num_res_blocks: usize,
    /// Level indices whose residual blocks end in self-attention.
    #[serde(default)]
    pub attention_resolutions: Vec<usize>,
    pub norm_groups: usize,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f32,
    /// Number of classes for class conditioning (a learned bias per block); absent: unconditional.
    #[serde(default)]
    pub num_classes: Option<usize>,
    pub time_emb_dim: usize,
    /// Multiplies the timestep before the sinusoidal features.
    #[serde(default = "default_time_emb_scale")]
    pub time_emb_scale: f32,
    pub activation: Activation,
}

fn default_norm_eps() -> f32 {
    1e-6
}

fn default_time_emb_scale() -> f32 {
    1.0
}

impl UNetConfig {
    /// Checks everything that does not depend on the weights; shapes are checked on load.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::Config(msg));
        if self.img_channels == 0 {
            return fail("img_channels must be positive".into());
        }
        if self.base_channels == 0 || !self.base_channels.is_multiple_of(2) {
            return fail(format!(
                "base_channels must be positive and even (it is also the sinusoidal embedding size), got {}",
                self.base_channels
            ));
        }
        if self.channel_mults.is_empty() || self.channel_mults.contains(&0) {
            return fail(format!(
                "channel_mults must be non-empty and positive, got {:?}",
                self.channel_mults
            ));
        }
        if self.num_res_blocks == 0 {
            return fail("num_res_blocks must be positive".into());
        }
        if let Some(&bad) = self
            .attention_resolutions
            .iter()
            .find(|&&i| i >= self.channel_mults.len())
        {
            return fail(format!(
                "attention_resolutions has level {bad}, but there are only {} levels",
                self.channel_mults.len()
            ));
        }
        if self.norm_groups == 0 {
            return fail("norm_groups must be positive".into());
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return fail(format!("norm_eps must be positive, got {}", self.norm_eps));
        }
        if self.num_classes == Some(0) {
            return fail("num_classes must be positive when present".into());
        }
        if self.time_emb_dim == 0 {
            return fail("time_emb_dim must be positive".into());
        }
        if !self.time_emb_scale.is_finite() {
            return fail("time_emb_scale must be finite".into());
        }
        Ok(())
    }

    /// Height and width must be divisible by this (each downsampling halves them).
    pub fn size_multiple(&self) -> usize {
        1 << (self.channel_mults.len() - 1)
    }
}
