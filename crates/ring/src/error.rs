//! Errors of ring-tensor operations: every shape problem names the operation and the shapes.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RingError {
    #[error("{op}: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("cannot encode {value} with {frac_bits} fractional bits: {reason}")]
    Encode {
        value: f64,
        frac_bits: u32,
        reason: &'static str,
    },
}

impl RingError {
    pub fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        RingError::Shape {
            op,
            detail: detail.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, RingError>;
