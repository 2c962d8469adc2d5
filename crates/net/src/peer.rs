//! Who is at the other end of a link: one of the three computing parties, the client (who owns
//! the input and the output) or the model owner (who owns the weights). Errors name peers with
//! this type, and TLS certificates are issued to these names.

use crate::{PartyId, PARTIES};
use std::fmt;

/// A role in a secdiff deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// Computing party 0, 1 or 2.
    Party(PartyId),
    /// The client: holds x_T, the labels and the noise, and is the only one to see x_0.
    Client,
    /// The model owner: holds the weights and shares them.
    ModelOwner,
}

impl Peer {
    /// All roles that hold a certificate, in a fixed order.
    pub const ALL: [Peer; 5] = [
        Peer::Party(0),
        Peer::Party(1),
        Peer::Party(2),
        Peer::Client,
        Peer::ModelOwner,
    ];

    /// The byte that identifies this role in a handshake.
    pub fn code(self) -> u8 {
        match self {
            Peer::Party(i) => i as u8,
            Peer::Client => 0x10,
            Peer::ModelOwner => 0x11,
        }
    }

    /// The role a handshake byte stands for, if any.
    pub fn from_code(code: u8) -> Option<Peer> {
        match code {
            c if (c as usize) < PARTIES => Some(Peer::Party(c as usize)),
            0x10 => Some(Peer::Client),
            0x11 => Some(Peer::ModelOwner),
            _ => None,
        }
    }

    /// Short name used for certificate files (`<name>.pem`, `<name>.key`).
    pub fn file_stem(self) -> &'static str {
        match self {
            Peer::Party(0) => "p0",
            Peer::Party(1) => "p1",
            Peer::Party(2) => "p2",
            Peer::Party(_) => "p-invalid",
            Peer::Client => "client",
            Peer::ModelOwner => "owner",
        }
    }

    /// The DNS name a certificate for this role is issued to. Certificates name roles rather
    /// than hosts, so a party can move to another machine without new certificates; the CA is
    /// private to one deployment.
    pub fn cert_name(self) -> String {
        format!("{}.secdiff", self.file_stem())
    }

    /// The party id, for computing parties.
    pub fn party(self) -> Option<PartyId> {
        match self {
            Peer::Party(i) => Some(i),
            _ => None,
        }
    }
}

impl From<PartyId> for Peer {
    fn from(id: PartyId) -> Self {
        Peer::Party(id)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Party(i) => write!(f, "P{i}"),
            Peer::Client => f.write_str("the client"),
            Peer::ModelOwner => f.write_str("the model owner"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_refused() {
        for p in Peer::ALL {
            assert_eq!(Peer::from_code(p.code()), Some(p));
        }
        assert_eq!(Peer::from_code(3), None);
        assert_eq!(Peer::from_code(0xff), None);
        assert_eq!(Peer::Party(1).to_string(), "P1");
    }
}
