//! The error type of the HE crate. Everything that arrives from outside (parameter blobs,
//! ciphertexts, COO tensors, network frames) is validated into one of these variants; SEAL's own
//! failures (it throws on bad input; sealy turns that into an error code) are wrapped with the
//! operation that raised them.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter set that SEAL rejects or that we do not accept (degree, moduli, scale).
    #[error("invalid CKKS parameters: {0}")]
    Parameters(String),
    /// A ciphertext or public-parameter blob made for a different parameter set.
    #[error("parameter set mismatch: data made for CKKS parameters {found:016x}, this context uses {expected:016x}")]
    ParameterMismatch { expected: u64, found: u64 },
    /// A ciphertext encrypted under a key other than the one used to decrypt it.
    #[error("ciphertext is under a foreign key (key id {found}, this client's key is {expected})")]
    ForeignKey { expected: String, found: String },
    /// Decryption produced values no latent can have: the ciphertext was not encrypted under this
    /// secret key (with a forged key id) or was altered in a way SEAL could not detect.
    #[error("decryption produced implausible values (|v| up to {max_abs:e}): ciphertext is not under this key or was corrupted")]
    Implausible { max_abs: f64 },
    /// A byte string ends before the length its header announces.
    #[error("truncated {what}: needs {needed} bytes, got {got}")]
    Truncated {
        what: &'static str,
        needed: usize,
        got: usize,
    },
    /// A byte string that is not what it claims to be (bad magic, version, sizes, trailing bytes).
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// Two ciphertexts or a ciphertext and a plaintext at different CKKS scales.
    #[error("scale mismatch in {op}: {detail}")]
    ScaleMismatch { op: &'static str, detail: String },
    /// Lengths or shapes that do not fit together.
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },
    /// A COO tensor whose indices are out of range, duplicated or unsorted.
    #[error("invalid COO tensor: {0}")]
    Coo(String),
    /// SEAL refused an operation.
    #[error("SEAL failed in {op}: {source}")]
    Seal {
        op: &'static str,
        #[source]
        source: sealy::Error,
    },
    /// The peer closed the connection or a read/write failed.
    #[error("{peer}: {detail}")]
    Network { peer: String, detail: String },
    /// A frame or message that breaks the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer reported an error.
    #[error("the {peer} reported an error: {message}")]
    Remote { peer: &'static str, message: String },
    /// A model or sampler error from the plaintext engine.
    #[error(transparent)]
    Model(#[from] nn::Error),
    #[error(transparent)]
    Diffusion(#[from] diffusion::Error),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub(crate) fn seal(op: &'static str) -> impl FnOnce(sealy::Error) -> Error {
        move |source| Error::Seal { op, source }
    }

    pub(crate) fn shape(op: &'static str, detail: impl std::fmt::Display) -> Error {
        Error::Shape {
            op,
            detail: detail.to_string(),
        }
    }

    pub(crate) fn corrupt(what: &'static str, detail: impl std::fmt::Display) -> Error {
        Error::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }
}
