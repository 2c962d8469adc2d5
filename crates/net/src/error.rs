//! Transport errors. Each names the peer involved so that a dead or misbehaving party can be
//! identified from any other party's log.

use crate::{PartyId, Peer};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{peer} sent nothing for {timeout:?} (dead or stalled)")]
    Timeout { peer: Peer, timeout: Duration },
    #[error("the link to {peer} is closed")]
    Closed { peer: Peer },
    #[error("{peer} disconnected without saying goodbye (process died or network failed)")]
    Died { peer: Peer },
    #[error("{peer} aborted the session: {reason}")]
    Aborted { peer: Peer, reason: String },
    #[error("{peer} sent a malformed frame: {detail}")]
    BadFrame { peer: Peer, detail: String },
    #[error("{peer} sent an unexpected message: {detail}")]
    Protocol { peer: Peer, detail: String },
    #[error("{peer} reported an error: {message}")]
    Remote { peer: Peer, message: String },
    #[error("I/O error on the link to {peer}: {source}")]
    Io {
        peer: Peer,
        #[source]
        source: std::io::Error,
    },
    #[error("could not connect to {peer} at {addr} within {timeout:?}: {source}")]
    Connect {
        peer: Peer,
        addr: String,
        timeout: Duration,
        #[source]
        source: std::io::Error,
    },
    #[error("handshake with {peer} failed: {detail}")]
    Handshake { peer: Peer, detail: String },
    #[error("a connection from {addr} was refused: {detail}")]
    Stranger { addr: String, detail: String },
    #[error("no connection from {waiting_for} within {timeout:?}")]
    AcceptTimeout {
        waiting_for: String,
        timeout: Duration,
    },
    #[error("no link from P{me} to P{peer}")]
    NoSuchPeer { me: PartyId, peer: PartyId },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Setup(String),
}

/// A `parties.toml` (or TLS file) that cannot be used; found before any work starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid parties config: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: party {id} is missing (need exactly parties 0, 1 and 2)")]
    MissingParty { path: PathBuf, id: PartyId },
    #[error("{path}: party {id} is listed more than once")]
    DuplicateParty { path: PathBuf, id: i64 },
    #[error("{path}: party id {id} is out of range (parties are 0, 1 and 2)")]
    UnknownParty { path: PathBuf, id: i64 },
    #[error("{path}: {what} address {addr:?} of party {id} is invalid: {reason}")]
    BadAddress {
        path: PathBuf,
        id: PartyId,
        what: &'static str,
        addr: String,
        reason: String,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("TLS file {path} for {role} does not exist (create it with `secdiff keygen`)")]
    MissingTlsFile { path: PathBuf, role: String },
}

impl NetError {
    /// An equal error for a second caller: a dead link reports the same failure to every later
    /// `recv`, and `std::io::Error` is not `Clone`.
    pub(crate) fn replicate(&self) -> NetError {
        use NetError::*;
        match self {
            Timeout { peer, timeout } => Timeout {
                peer: *peer,
                timeout: *timeout,
            },
            Closed { peer } => Closed { peer: *peer },
            Died { peer } => Died { peer: *peer },
            Aborted { peer, reason } => Aborted {
                peer: *peer,
                reason: reason.clone(),
            },
            BadFrame { peer, detail } => BadFrame {
                peer: *peer,
                detail: detail.clone(),
            },
            Protocol { peer, detail } => Protocol {
                peer: *peer,
                detail: detail.clone(),
            },
            Remote { peer, message } => Remote {
                peer: *peer,
                message: message.clone(),
            },
            Io { peer, source } => Io {
                peer: *peer,
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Handshake { peer, detail } => Handshake {
                peer: *peer,
                detail: detail.clone(),
            },
            other => Setup(other.to_string()),
        }
    }

    /// The peer this error is about, if it is about one.
    pub fn peer(&self) -> Option<Peer> {
        use NetError::*;
        match self {
            Timeout { peer, .. }
            | Closed { peer }
            | Died { peer }
            | Aborted { peer, .. }
            | BadFrame { peer, .. }
            | Protocol { peer, .. }
            | Remote { peer, .. }
            | Io { peer, .. }
            | Connect { peer, .. }
            | Handshake { peer, .. } => Some(*peer),
            NoSuchPeer { peer, .. } => Some(Peer::Party(*peer)),
            _ => None,
        }
    }
}
