//! Errors of the MPC layer. A protocol fails only because of the network (a dead, slow or
//! misbehaving peer, named in the error), a malformed message, or a caller's shape mistake; it
//! never panics on what a peer sent.

use net::{NetError, PartyId};
use ring::RingError;

#[derive(Debug, thiserror::Error)]
pub enum MpcError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error("{protocol}: party P{from} sent {got} bytes, expected {expected}")]
    BadMessage {
        protocol: &'static str,
        from: PartyId,
        expected: usize,
        got: usize,
    },
    #[error("{protocol}: {detail}")]
    Invalid {
        protocol: &'static str,
        detail: String,
    },
}

impl MpcError {
    pub fn invalid(protocol: &'static str, detail: impl Into<String>) -> Self {
        MpcError::Invalid {
            protocol,
            detail: detail.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, MpcError>;
