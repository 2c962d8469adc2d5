//! The training configuration (`models/mnist-sd/train.toml`): where the data and the model config
//! are, and the hyperparameters of each part.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use nn::{Error, Result};

/// Hyperparameters shared by every part.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hyper {
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// Linear warm-up steps, then cosine decay to `lr * min_lr_ratio`.
    #[serde(default = "default_warmup")]
    pub warmup: usize,
    #[serde(default = "default_min_lr_ratio")]
    pub min_lr_ratio: f64,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default = "default_ema")]
    pub ema_decay: f64,
    #[serde(default = "default_clip")]
    pub grad_clip: f64,
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// Autoencoder: weight of the KL term against the per-pixel L1 reconstruction loss.
    #[serde(default = "default_kl_weight")]
    pub kl_weight: f64,
    /// U-Net: fraction of training prompts replaced by the empty prompt (classifier-free
    /// guidance).
    #[serde(default = "default_empty_prompt_fraction")]
    pub empty_prompt_fraction: f64,
    /// U-Net: samples per digit in the preview grid drawn after training (0: none).
    #[serde(default = "default_preview")]
    pub preview_per_digit: usize,
    /// Classifier: random translation of training digits by up to this many pixels.
    #[serde(default)]
    pub max_shift: usize,
}

fn default_kl_weight() -> f64 {
    1e-4
}
fn default_empty_prompt_fraction() -> f64 {
    0.1
}
fn default_preview() -> usize {
    8
}

fn default_warmup() -> usize {
    100
}
fn default_min_lr_ratio() -> f64 {
    0.05
}
fn default_ema() -> f64 {
    0.999
}
fn default_clip() -> f64 {
    1.0
}
fn default_checkpoint_every() -> usize {
    250
}

impl Hyper {
    pub fn validate(&self, part: &str) -> Result<()> {
        let ok = self.steps > 0
            && self.batch_size > 0
            && self.lr > 0.0
            && self.lr.is_finite()
            && (0.0..1.0).contains(&self.ema_decay)
            && (0.0..=1.0).contains(&self.min_lr_ratio)
            && self.checkpoint_every > 0
            && self.grad_clip > 0.0
            && self.kl_weight >= 0.0
            && (0.0..1.0).contains(&self.empty_prompt_fraction);
        if ok {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "[{part}]: need steps, batch_size, checkpoint_every > 0, lr > 0, \
                 0 <= ema_decay < 1, 0 <= min_lr_ratio <= 1, grad_clip > 0, kl_weight >= 0, \
                 0 <= empty_prompt_fraction < 1; got {self:?}"
            )))
        }
    }

    /// The learning rate at `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.steps.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup) as f64 / span as f64).min(1.0);
        let floor = self.lr * self.min_lr_ratio;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The MNIST safetensors file (relative paths are relative to the config file).
    pub data: PathBuf,
    /// The model's `config.toml`.
    pub model_config: PathBuf,
    pub seed: u64,
    /// Use only the first N training rows (quick trials and tests); all when absent.
    #[serde(default)]
    pub train_rows: Option<usize>,
    pub autoencoder: Hyper,
    pub unet: Hyper,
    pub classifier: Hyper,
}

impl TrainConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::File {
            path: shown.clone(),
            detail: e.to_string(),
        })?;
        let mut cfg: TrainConfig = toml::from_str(&text).map_err(|e| Error::File {
            path: shown.clone(),
            detail: format!("invalid training config: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        if cfg.data.is_relative() {
            cfg.data = base.join(&cfg.data);
        }
        if cfg.model_config.is_relative() {
            cfg.model_config = base.join(&cfg.model_config);
        }
        cfg.autoencoder.validate("autoencoder")?;
        cfg.unet.validate("unet")?;
        cfg.classifier.validate("classifier")?;
        Ok(cfg)
    }
}
