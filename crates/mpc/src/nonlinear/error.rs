//! Errors of the nonlinear functions.

/// Everything a nonlinear function can fail with.
#[derive(Debug, thiserror::Error)]
pub enum NonlinearError {
    /// Operands whose lengths or shapes disagree with each other or with the function.
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },
    /// A parameter outside what the function supports (a bound that does not fit the ring, a
    /// scale that does not fit the fraction bits).
    #[error("unsupported range in {op}: {detail}")]
    Range { op: &'static str, detail: String },
    /// A method name that does not exist for this function.
    #[error("unknown method `{name}` for {function}; known: {known}")]
    UnknownMethod {
        function: &'static str,
        name: String,
        known: String,
    },
    /// The underlying protocol failed (a dead peer, a malformed message).
    #[error("protocol failure: {0}")]
    Protocol(String),
}
