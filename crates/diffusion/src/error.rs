//! Errors of schedules, samplers and model directories.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A step count (or spacing) that the schedule cannot take.
    #[error("cannot sample with {steps} steps: {reason}")]
    Steps { steps: usize, reason: String },
    /// A beta schedule that is not a valid diffusion schedule.
    #[error("invalid schedule: {0}")]
    Schedule(String),
    /// A model name that resolves to no model directory.
    #[error("unknown model `{name}`: no {name}/config.toml under {searched}")]
    UnknownModel { name: String, searched: String },
    /// A model configuration file that is missing, unreadable or invalid.
    #[error("model config {path}: {detail}")]
    Config { path: String, detail: String },
    /// Sampler noise of the wrong shape or length.
    #[error("noise: {0}")]
    Noise(String),
    /// Pipeline inputs (token rows, x_T) whose shapes do not fit the model.
    #[error("inputs: {0}")]
    Inputs(String),
    /// A protocol of the parties failed (a party's error, a dead party, a bad message).
    #[error("mpc: {0}")]
    Mpc(#[from] mpc::MpcError),
    /// The model (or a tensor op) failed.
    #[error(transparent)]
    Model(#[from] nn::Error),
}
