//! Transport errors. Each names the peer involved so that a dead or misbehaving party can be
//! identified from any other party's log.

use crate::PartyId;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("party P{peer} sent nothing for {timeout:?} (dead or stalled)")]
    Timeout { peer: PartyId, timeout: Duration },
    #[error("link to party P{peer} is closed")]
    Closed { peer: PartyId },
    #[error("party P{peer} sent a malformed frame: {detail}")]
    BadFrame { peer: PartyId, detail: String },
    #[error("I/O error on the link to party P{peer}: {source}")]
    Io {
        peer: PartyId,
        #[source]
        source: std::io::Error,
    },
    #[error("no link from party P{me} to party P{peer}")]
    NoSuchPeer { me: PartyId, peer: PartyId },
    #[error("{0}")]
    Setup(String),
}
