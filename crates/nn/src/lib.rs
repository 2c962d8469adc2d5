//! Neural-network layers and diffusion architectures, written once against the [`Backend`] trait
//! so that the same model code runs in plaintext (`Plain`), in plaintext that reproduces the secure
//! approximations (`Approx`), on secret shares (`Mpc`) and under an autograd framework (training).

pub mod approx;
pub mod backend;
pub mod error;
pub mod mpc;
pub mod plain;
pub mod sd;

pub use approx::{Approx, ApproxTensor};
pub use backend::{Backend, ConvSpec, Padding, ParamSource};
pub use error::{Error, Result};
pub use mpc::{Methods, Mpc, MpcParam};
pub use plain::{Plain, PlainTensor};
pub mod layers;
pub mod unet;
pub mod weights;
