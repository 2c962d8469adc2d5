//! Configurations of the Stable Diffusion family, with diffusers' field names so that a diffusers
//! `config.json` translates key for key. Read from TOML; every value is checked before a model is
//! built from it.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Down blocks of `UNet2DConditionModel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownBlockType {
    CrossAttnDownBlock2D,
    DownBlock2D,
}

/// Up blocks of `UNet2DConditionModel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpBlockType {
    CrossAttnUpBlock2D,
    UpBlock2D,
}

fn default_norm_eps() -> f32 {
    1e-5
}
fn one() -> usize {
    1
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNet2DConditionConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub sample_size: usize,
    pub down_block_types: Vec<DownBlockType>,
    pub up_block_types: Vec<UpBlockType>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub cross_attention_dim: usize,
    /// The number of attention heads, as diffusers (mis)names it in SD 1.x configs.
    pub attention_head_dim: usize,
    pub norm_num_groups: usize,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f32,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default = "one")]
    pub transformer_layers_per_block: usize,
}

impl UNet2DConditionConfig {
    /// Stable Diffusion v1.5's U-Net (diffusers `runwayml/stable-diffusion-v1-5/unet`).
    pub fn sd_v1_5() -> Self {
        use DownBlockType::*;
        use UpBlockType::*;
        UNet2DConditionConfig {
            in_channels: 4,
            out_channels: 4,
            sample_size: 64,
            down_block_types: vec![
                CrossAttnDownBlock2D,
                CrossAttnDownBlock2D,
                CrossAttnDownBlock2D,
                DownBlock2D,
            ],
            up_block_types: vec![
                UpBlock2D,
                CrossAttnUpBlock2D,
                CrossAttnUpBlock2D,
                CrossAttnUpBlock2D,
            ],
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            cross_attention_dim: 768,
            attention_head_dim: 8,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            use_linear_projection: false,
            transformer_layers_per_block: 1,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        let bad = |m: String| Err(Error::Config(format!("unet: {m}")));
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return bad(format!(
                "block_out_channels, down_block_types and up_block_types must have the same, \
                 non-zero length (got {}, {}, {})",
                n,
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if self.layers_per_block == 0 || self.in_channels == 0 || self.out_channels == 0 {
            return bad("layers_per_block and channel counts must be positive".into());
        }
        for &c in &self.block_out_channels {
            if self.norm_num_groups == 0 || c % self.norm_num_groups != 0 {
                return bad(format!(
                    "{c} channels are not divisible by norm_num_groups {}",
                    self.norm_num_groups
                ));
            }
            if self.attention_head_dim == 0 || c % self.attention_head_dim != 0 {
                return bad(format!(
                    "{c} channels are not divisible into {} heads",
                    self.attention_head_dim
                ));
            }
        }
        if !self.block_out_channels[0].is_multiple_of(2) {
            return bad("block_out_channels[0] (the timestep feature width) must be even".into());
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderKLConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    /// Latents are multiplied by this before diffusion (SD 1.x: 0.18215). `None`: read from the
    /// weights file's metadata, where training stores the value it measured.
    #[serde(default)]
    pub scaling_factor: Option<f32>,
}

impl AutoencoderKLConfig {
    /// Stable Diffusion v1.5's VAE.
    pub fn sd_v1_5() -> Self {
        AutoencoderKLConfig {
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: Some(0.18215),
        }
    }

    /// How much smaller the latent is than the image (2^(blocks - 1)).
    pub fn downsampling_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("vae: {m}")));
        if self.block_out_channels.is_empty() || self.layers_per_block == 0 {
            return bad("block_out_channels must be non-empty, layers_per_block positive".into());
        }
        if self.in_channels == 0 || self.out_channels == 0 || self.latent_channels == 0 {
            return bad("channel counts must be positive".into());
        }
        for &c in &self.block_out_channels {
            if self.norm_num_groups == 0 || c % self.norm_num_groups != 0 {
                return bad(format!(
                    "{c} channels are not divisible by norm_num_groups {}",
                    self.norm_num_groups
                ));
            }
        }
        Ok(())
    }
}

/// CLIP's MLP activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// GeLU (tanh form).
    Gelu,
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP, SD 1.x), built from SiLU.
    QuickGelu,
}

fn default_ln_eps() -> f32 {
    1e-5
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f32,
}

impl ClipTextConfig {
    /// CLIP ViT-L/14's text tower, SD v1.5's text encoder.
    pub fn sd_v1_5() -> Self {
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("text_encoder: {m}")));
        if self.vocab_size == 0 || self.max_position_embeddings == 0 || self.hidden_size == 0 {
            return bad(
                "vocab_size, hidden_size and max_position_embeddings must be positive".into(),
            );
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return bad(format!(
                "hidden_size {} is not divisible into {} heads",
                self.hidden_size, self.num_attention_heads
            ));
        }
        Ok(())
    }
}

/// The noise schedule the U-Net was trained with (diffusers `DDPMScheduler` fields).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    /// "scaled_linear" (SD) or "linear".
    pub beta_schedule: String,
}

impl SchedulerConfig {
    /// The cumulative products of (1 - beta) for t = 0..T.
    pub fn alphas_cumprod(&self) -> Result<Vec<f64>> {
        let mut acc = 1.0;
        Ok(self
            .betas()?
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect())
    }

    /// The betas for t = 0..T, as diffusers' `DDPMScheduler` computes them.
    pub fn betas(&self) -> Result<Vec<f64>> {
        let t = self.num_train_timesteps;
        if t < 2
            || !(0.0 < self.beta_start && self.beta_start < self.beta_end && self.beta_end < 1.0)
        {
            return Err(Error::Config(format!(
                "scheduler: need num_train_timesteps >= 2 and 0 < beta_start < beta_end < 1, got \
                 {t}, {}, {}",
                self.beta_start, self.beta_end
            )));
        }
        let lerp = |a: f64, b: f64, i: usize| a + (b - a) * i as f64 / (t - 1) as f64;
        Ok(match self.beta_schedule.as_str() {
            "linear" => (0..t)
                .map(|i| lerp(self.beta_start, self.beta_end, i))
                .collect(),
            "scaled_linear" => (0..t)
                .map(|i| lerp(self.beta_start.sqrt(), self.beta_end.sqrt(), i).powi(2))
                .collect(),
            other => {
                return Err(Error::Config(format!(
                    "scheduler: unknown beta_schedule `{other}` (linear, scaled_linear)"
                )))
            }
        })
    }
}

/// A text-to-image latent diffusion model: the `config.toml` next to its weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StableDiffusionConfig {
    /// Image height = width in pixels.
    pub image_size: usize,
    pub vae: AutoencoderKLConfig,
    pub unet: UNet2DConditionConfig,
    pub text_encoder: ClipTextConfig,
    pub scheduler: SchedulerConfig,
    /// The classifier that scores samples (`secdiff eval`), if the model ships one.
    #[serde(default)]
    pub classifier: Option<super::classifier::ClassifierConfig>,
}

impl StableDiffusionConfig {
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| Error::File {
            path: origin.to_string(),
            detail: format!("invalid model config: {e}"),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::File {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    pub fn validate(&self) -> Result<()> {
        self.vae.validate()?;
        self.unet.validate()?;
        self.text_encoder.validate()?;
        self.scheduler.alphas_cumprod()?;
        let f = self.vae.downsampling_factor();
        if self.image_size == 0 || !self.image_size.is_multiple_of(f) {
            return Err(Error::Config(format!(
                "image_size {} is not a multiple of the VAE's downsampling factor {f}",
                self.image_size
            )));
        }
        if self.unet.in_channels != self.vae.latent_channels
            || self.unet.out_channels != self.vae.latent_channels
        {
            return Err(Error::Config(format!(
                "the U-Net's in/out channels ({}, {}) must equal the VAE's latent_channels {}",
                self.unet.in_channels, self.unet.out_channels, self.vae.latent_channels
            )));
        }
        if self.unet.cross_attention_dim != self.text_encoder.hidden_size {
            return Err(Error::Config(format!(
                "unet.cross_attention_dim {} must equal text_encoder.hidden_size {}",
                self.unet.cross_attention_dim, self.text_encoder.hidden_size
            )));
        }
        Ok(())
    }

    /// Side of the latent (image_size / downsampling factor).
    pub fn latent_size(&self) -> usize {
        self.image_size / self.vae.downsampling_factor()
    }
}
