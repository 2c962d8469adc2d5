//! The Stable Diffusion family with diffusers' module structure and weight names: `AutoencoderKL`,
//! a CLIP-style text transformer and `UNet2DConditionModel`, plus what a text-to-image pipeline
//! needs around them (configs, the word tokenizer, weights in diffusers' layout) and the small
//! MNIST classifier that scores samples.

pub mod attention;
pub mod autoencoder_kl;
pub mod classifier;
pub mod clip_text;
pub mod config;
pub mod grid;
pub mod mnist;
pub mod model_files;
pub mod resample;
pub mod resnet;
pub mod shares;
pub mod tokenizer;
pub mod unet_2d_condition;
pub mod weights;

pub use autoencoder_kl::{AutoencoderKL, VaeParts};
pub use classifier::{ClassifierConfig, MnistClassifier};
pub use clip_text::ClipTextTransformer;
pub use config::{
    AutoencoderKLConfig, ClipTextConfig, SchedulerConfig, StableDiffusionConfig,
    UNet2DConditionConfig,
};
pub use shares::{deal_model_files, SdShares};
pub use tokenizer::WordTokenizer;
pub use unet_2d_condition::UNet2DConditionModel;

#[cfg(test)]
mod tests;
