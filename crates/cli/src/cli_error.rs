//! The error type of the foundation subcommands (generate, info, bench plain): each variant
//! names what was wrong so the message alone tells the user what to fix.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag value that cannot be used (bad label, bad step count, ...).
    #[error("{0}")]
    Usage(String),
    /// An input file that does not hold what it should.
    #[error("{path}: {detail}")]
    Input { path: String, detail: String },
    #[error(transparent)]
    Diffusion(#[from] diffusion::Error),
    #[error(transparent)]
    Nn(#[from] nn::Error),
    #[error("{0}")]
    Other(String),
}

impl CliError {
    pub fn input(path: &Path, detail: impl std::fmt::Display) -> Self {
        CliError::Input {
            path: path.display().to_string(),
            detail: detail.to_string(),
        }
    }
}

pub type CliResult<T> = Result<T, CliError>;
