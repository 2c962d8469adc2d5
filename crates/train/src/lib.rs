//! Training secdiff's own models (the Stable Diffusion family at MNIST scale and the classifier
//! that scores it) through the shared model code in `nn`, on candle's autograd. This crate is the
//! only one that depends on the framework; the CLI pulls it in with its `train` feature.

pub mod autoencoder;
pub mod backend;
pub mod classifier;
pub mod config;
pub mod conv;
pub mod data;
pub mod fit;
pub mod params;
pub mod unet;

pub use backend::Candle;
pub use config::TrainConfig;
pub use fit::FitReport;
