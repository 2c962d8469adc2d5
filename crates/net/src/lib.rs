//! Transport between the three MPC parties and to the outside roles: the [`Transport`] trait
//! that protocols talk through, the byte and round [`Meter`] that attributes traffic to the
//! protocol that caused it, an in-memory mesh for tests and the single-process runner, and the
//! TCP/TLS mesh ([`TcpMesh`]) for separate processes.

mod client;
mod config;
mod error;
mod frame;
mod handshake;
pub mod keys;
mod link;
mod local;
mod mesh;
mod message;
mod meter;
mod peer;
mod stream;
pub mod tls;

pub use client::{connect_parties, connect_parties_at, PartyServer, RoleLink};
pub use config::PartiesConfig;
pub use error::{ConfigError, NetError};
pub use frame::{DEFAULT_MAX_FRAME, HEADER_LEN, PROTOCOL_VERSION};
pub use keys::KeySet;
pub use local::LocalMesh;
pub use mesh::{MeshOptions, TcpMesh};
pub use message::Message;
pub use meter::{CostRecord, Meter, MeterScope};
pub use peer::Peer;
pub use tls::TlsIdentity;

/// A party's index in the three-party computation: 0, 1 or 2.
pub type PartyId = usize;

/// Number of computing parties.
pub const PARTIES: usize = 3;

/// A party's links to the other two computing parties.
///
/// `send` never blocks on the peer (each link has its own sender), so two parties that send large
/// messages to each other at the same time cannot deadlock. `recv` waits at most the transport's
/// timeout and then fails with an error that names the peer. Messages on one link arrive in the
/// order they were sent.
pub trait Transport: Send + Sync {
    /// This party's id.
    fn id(&self) -> PartyId;
    /// Queue `payload` for party `to`.
    fn send(&self, to: PartyId, payload: Vec<u8>) -> Result<(), NetError>;
    /// The next message from party `from`.
    fn recv(&self, from: PartyId) -> Result<Vec<u8>, NetError>;
    /// The byte and round counters of this party.
    fn meter(&self) -> &Meter;

    /// Queue `payload` for party `to` as a later piece of a message this party began sending
    /// in an earlier send (a pipelined protocol's next piece, whose contents depend on nothing
    /// received since): metered as bytes and a message, not as a round
    /// ([`Meter::record_continuation`]).
    fn send_continuation(&self, to: PartyId, payload: Vec<u8>) -> Result<(), NetError>;

    /// The party after this one (P_{i+1 mod 3}).
    fn next(&self) -> PartyId {
        (self.id() + 1) % PARTIES
    }
    /// The party before this one (P_{i-1 mod 3}).
    fn prev(&self) -> PartyId {
        (self.id() + PARTIES - 1) % PARTIES
    }
}
