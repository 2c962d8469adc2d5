//! Beta schedules and samplers, generic over `nn::Backend`.
//!
//! Every scheduler coefficient is a public scalar applied with `Backend::scale`/`add`/`sub`, so a
//! denoising step is local work on shares under MPC; the only nonlinear op a sampler uses is
//! DDIM's optional x0 clipping (`Backend::clamp`). The denoiser is a closure (a U-Net forward,
//! possibly wrapped for classifier-free guidance) and the per-step noise comes from a
//! [`NoiseSource`] (a seeded RNG, a file, or under MPC the client's shares). [`TextToImage`] is the
//! Stable Diffusion family's pipeline (text encoder, guided DDIM, VAE decoder) on top of them.

mod error;
mod model_dir;
mod noise;
mod private_text;
mod sampler;
mod schedule;
mod sdu;
mod text_to_image;

pub use error::{Error, Result};
pub use model_dir::{models_root, resolve_model, ModelConfig, ModelDir, ModelMeta, WeightsLayout};
pub use noise::{NoiseSource, SeededNoise, TensorNoise};
pub use private_text::{sample_on_shares_local, PrivateSample, ShareSettings};
pub use sampler::{DdimConfig, Sampler, Spacing, StepInfo};
pub use schedule::{BetaSchedule, Schedule};
pub use sdu::{refined_timesteps, reverse_ddim, sdu_targets, sdu_weight, Sdu, SduTargets};
pub use text_to_image::{guided, schedule_of, sd_ddim, token_rows, SampleOptions, TextToImage};
