//! HE-Diffusion (Chen & Yan, 2024) as secdiff's `he` mode: the client keeps its latent, encrypts
//! the part that carries most of its information under CKKS (Microsoft SEAL via `sealy`), and a
//! single server updates that part under encryption while running the U-Net in plaintext.
//!
//! Licence: GPL-3.0 (sealy is GPL-3.0), unlike the rest of the workspace.

pub mod attack;
pub mod audit;
pub mod bench;
pub mod ckks;
pub mod codec;
pub mod coo;
pub mod error;
pub mod metrics;
pub mod model;
pub mod protocol;
pub mod sampler;
pub mod split;
pub mod step;
pub mod tcp;
pub mod wire;

pub use ckks::{CkksContext, CkksParams, ClientKeys, EncryptedVector, KeyId, Packing, Preset};
pub use error::{Error, Result};
