//! The files of a text-to-image model directory (`models/mnist-sd/`): config, tokenizer
//! vocabulary and the three weights files, checked against each other. The sampling pipeline
//! that uses them is `diffusion::TextToImage`.

use std::path::Path;

use super::config::StableDiffusionConfig;
use super::tokenizer::WordTokenizer;
use super::weights::WeightsFile;
use crate::{Error, Result};

/// The files of a model directory such as `models/mnist-sd/`.
pub struct ModelFiles {
    pub config: StableDiffusionConfig,
    pub tokenizer: WordTokenizer,
    pub vae: WeightsFile,
    pub unet: WeightsFile,
    pub text_encoder: WeightsFile,
}

impl ModelFiles {
    pub fn load(dir: &Path) -> Result<Self> {
        let config = StableDiffusionConfig::from_file(&dir.join("config.toml"))?;
        let tokenizer = WordTokenizer::from_file(
            &dir.join("vocab.txt"),
            config.text_encoder.max_position_embeddings,
        )?;
        if tokenizer.vocab_size() != config.text_encoder.vocab_size {
            return Err(Error::Config(format!(
                "vocab.txt has {} tokens but text_encoder.vocab_size is {}",
                tokenizer.vocab_size(),
                config.text_encoder.vocab_size
            )));
        }
        Ok(ModelFiles {
            tokenizer,
            vae: WeightsFile::load(&dir.join("vae.safetensors"))?,
            unet: WeightsFile::load(&dir.join("unet.safetensors"))?,
            text_encoder: WeightsFile::load(&dir.join("text_encoder.safetensors"))?,
            config,
        })
    }

    /// The latent scaling factor: the config's, else the one training measured and stored.
    pub fn scaling_factor(&self) -> Result<f32> {
        scaling_factor(&self.config, &self.vae)
    }
}

/// The config's `vae.scaling_factor`, else the `scaling_factor` metadata of the VAE weights.
pub fn scaling_factor(config: &StableDiffusionConfig, vae: &WeightsFile) -> Result<f32> {
    if let Some(s) = config.vae.scaling_factor {
        return Ok(s);
    }
    vae.metadata
        .get("scaling_factor")
        .and_then(|s| s.parse::<f32>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .ok_or_else(|| Error::File {
            path: vae.path.clone(),
            detail: "no vae.scaling_factor in the config and no `scaling_factor` metadata".into(),
        })
}

/// Whether the model directory `dir` holds a text-to-image model of this family (its
/// config.toml has a `[text_encoder]` table), as opposed to a label-conditional U-Net.
pub fn is_text_to_image(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.toml"))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .is_some_and(|table| table.contains_key("text_encoder"))
}
