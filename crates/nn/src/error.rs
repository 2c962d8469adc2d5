//! The error type shared by every backend and model in this crate.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while building or running a model. Untrusted inputs (weight files,
/// configs, shapes arriving over the network) must end up here, never in a panic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two operands, or an operand and what an op expects, disagree on shape.
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },
    /// A parameter the model asked for is not in the weights.
    #[error("missing parameter `{name}`")]
    MissingParam { name: String },
    /// A parameter exists but has the wrong shape.
    #[error("parameter `{name}` has shape {found:?}, expected {expected:?}")]
    ParamShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A model configuration that cannot describe a valid model.
    #[error("invalid model config: {0}")]
    Config(String),
    /// Reading or decoding a weights or data file failed.
    #[error("{path}: {detail}")]
    File { path: String, detail: String },
    /// A backend-specific failure (a network error in MPC, a framework error in training).
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    pub fn shape(op: &'static str, detail: impl fmt::Display) -> Self {
        Error::Shape {
            op,
            detail: detail.to_string(),
        }
    }
}
