//! Links between the parties and the outside roles: the client (shares x_T, labels and noise,
//! and is the only one to get x_0 back) and the model owner (shares the weights).
//!
//! Each party listens on its client port ([`PartyServer`]); an outside role dials all three
//! ([`connect_parties`]). The links use the mesh's framing, handshake, TLS, timeouts and errors,
//! and carry [`Message`]s; a receiver that gets shares of the wrong name or shape tells the
//! sender why before failing, so a client with a bad input sees the reason on its own side.

use crate::config::PartiesConfig;
use crate::handshake::Handshake;
use crate::link::Link;
use crate::mesh::MeshOptions;
use crate::message::Message;
use crate::tls::TlsIdentity;
use crate::{Meter, NetError, PartyId, Peer, PARTIES};
use crossbeam_channel::unbounded;
use std::cell::Cell;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// A framed, authenticated link to one peer outside the mesh.
pub struct RoleLink {
    peer: Peer,
    link: Link,
    meter: Meter,
}

impl RoleLink {
    fn new(
        peer: Peer,
        stream: crate::stream::Stream,
        opts: &MeshOptions,
    ) -> Result<Self, NetError> {
        Ok(RoleLink {
            peer,
            link: Link::spawn(peer, stream, opts.link(), unbounded(), None)?,
            meter: Meter::new(),
        })
    }

    /// Who is at the other end.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// Bytes and messages sent on this link.
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// Queues raw bytes (never blocks on the peer).
    pub fn send(&self, payload: Vec<u8>) -> Result<(), NetError> {
        self.meter.record_send(payload.len());
        self.link.send(payload)
    }

    /// The next raw payload, waiting at most the timeout.
    pub fn recv(&self) -> Result<Vec<u8>, NetError> {
        let m = self.link.recv()?;
        self.meter.record_recv();
        Ok(m)
    }

    pub fn send_msg(&self, msg: &Message) -> Result<(), NetError> {
        self.send(msg.encode())
    }

    /// The next message; an [`Message::Error`] from the peer becomes [`NetError::Remote`].
    pub fn recv_msg(&self) -> Result<Message, NetError> {
        match Message::decode(&self.recv()?, self.peer)? {
            Message::Error(message) => Err(NetError::Remote {
                peer: self.peer,
                message,
            }),
            m => Ok(m),
        }
    }

    /// Tells the peer that this side gives up, and why.
    pub fn fail(&self, reason: &str) {
        let _ = self.send_msg(&Message::Error(reason.to_string()));
    }

    /// Receives the shares named `name`, which must have exactly `shape`. Anything else is
    /// reported to the peer and returned as [`NetError::Protocol`].
    pub fn recv_shares(&self, name: &str, shape: &[usize]) -> Result<Vec<u64>, NetError> {
        let wrong = |detail: String| {
            self.fail(&detail);
            NetError::Protocol {
                peer: self.peer,
                detail,
            }
        };
        match self.recv_msg()? {
            Message::Shares {
                name: got,
                shape: got_shape,
                data,
            } => {
                if got != name {
                    return Err(wrong(format!(
                        "expected shares {name:?}, got shares {got:?}"
                    )));
                }
                if got_shape != shape {
                    return Err(wrong(format!(
                        "shares {name:?} have shape {got_shape:?}, expected {shape:?}"
                    )));
                }
                Ok(data)
            }
            Message::Control(text) => Err(wrong(format!(
                "expected shares {name:?}, got control message {:?}",
                text.chars().take(80).collect::<String>()
            ))),
            Message::Error(_) => unreachable!("recv_msg turns errors into Err"),
        }
    }
}

/// A party's listener for the client and the model owner.
pub struct PartyServer {
    id: PartyId,
    listener: TcpListener,
    opts: MeshOptions,
    tls: Option<TlsIdentity>,
}

impl PartyServer {
    /// Listens on party `id`'s client address from the config (TLS as configured).
    pub fn bind(cfg: &PartiesConfig, id: PartyId) -> Result<Self, NetError> {
        if id >= PARTIES {
            return Err(NetError::Setup(format!("party id {id} is not 0, 1 or 2")));
        }
        let tls = cfg.tls_identity(Peer::Party(id))?;
        let at = cfg.client[id];
        let listener = TcpListener::bind(at)
            .map_err(|e| NetError::Setup(format!("P{id} cannot listen on {at}: {e}")))?;
        Ok(Self::from_listener(id, listener, cfg.mesh_options(), tls))
    }

    pub fn from_listener(
        id: PartyId,
        listener: TcpListener,
        opts: MeshOptions,
        tls: Option<TlsIdentity>,
    ) -> Self {
        if tls.is_none() {
            tracing::warn!("P{id}: TLS is OFF for client links (use only on loopback)");
        }
        PartyServer {
            id,
            listener,
            opts,
            tls,
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Waits for `role` to connect (at most the connect timeout).
    pub fn accept(&self, role: Peer) -> Result<RoleLink, NetError> {
        Ok(self.accept_all(&[role])?.pop().expect("one role, one link"))
    }

    /// Waits until each of `roles` has connected once, in any order, and returns their links in
    /// the order of `roles`. Connections from other roles, or with a bad handshake, are refused
    /// (the dialer is told why) and waiting goes on until the connect timeout.
    pub fn accept_all(&self, roles: &[Peer]) -> Result<Vec<RoleLink>, NetError> {
        let id = self.id;
        let hs = Handshake {
            me: Peer::Party(id),
            session: self.opts.session,
            connect_timeout: self.opts.connect_timeout,
            tls: self.tls.as_ref(),
            cancel: None,
        };
        let deadline = Instant::now() + self.opts.connect_timeout;
        let mut links: Vec<Option<RoleLink>> = roles.iter().map(|_| None).collect();
        let mut last_refusal = String::new();
        while links.iter().any(|l| l.is_none()) {
            let waiting: Vec<String> = roles
                .iter()
                .zip(&links)
                .filter(|(_, l)| l.is_none())
                .map(|(r, _)| r.to_string())
                .collect();
            let slot = Cell::new(None);
            let admit = |role: Peer| match roles.iter().position(|r| *r == role) {
                Some(i) if links[i].is_none() => {
                    slot.set(Some(i));
                    Ok(())
                }
                Some(_) => Err(format!("{role} is already connected to P{id}")),
                None => Err(format!(
                    "P{id} is waiting for {}, not for {role}",
                    waiting.join(" and ")
                )),
            };
            let what = format!("{}{last_refusal}", waiting.join(" and "));
            match hs.accept(&self.listener, deadline, &what, &admit) {
                Ok((role, stream)) => {
                    let i = slot.get().expect("admitted roles have a slot");
                    links[i] = Some(RoleLink::new(role, stream, &self.opts)?);
                }
                // A stranger, or a participant we are not waiting for (it is told why): keep
                // waiting for the roles we need.
                Err(e @ (NetError::Stranger { .. } | NetError::Handshake { .. })) => {
                    tracing::warn!("P{id}: refused a connection: {e}");
                    last_refusal = format!(" (last refused: {e})");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(links
            .into_iter()
            .map(|l| l.expect("all connected"))
            .collect())
    }
}

/// Connects an outside `role` to all three parties of the deployment in `cfg`.
pub fn connect_parties(cfg: &PartiesConfig, role: Peer) -> Result<[RoleLink; PARTIES], NetError> {
    if role.party().is_some() {
        return Err(NetError::Setup(format!(
            "{role} is a computing party; parties connect with TcpMesh"
        )));
    }
    let tls = cfg.tls_identity(role)?;
    connect_parties_at(&cfg.client, role, &cfg.mesh_options(), tls.as_ref())
}

/// Connects `role` to the parties listening at `addrs` (retrying until the connect timeout).
pub fn connect_parties_at(
    addrs: &[SocketAddr; PARTIES],
    role: Peer,
    opts: &MeshOptions,
    tls: Option<&TlsIdentity>,
) -> Result<[RoleLink; PARTIES], NetError> {
    if let Some(t) = tls {
        if t.role() != role {
            return Err(NetError::Tls(format!(
                "{role} was given the certificate of {}",
                t.role()
            )));
        }
    } else {
        tracing::warn!("{role}: TLS is OFF for the links to the parties (use only on loopback)");
    }
    // One refusal stops the other dials' retries.
    let give_up = AtomicBool::new(false);
    let hs = Handshake {
        me: role,
        session: opts.session,
        connect_timeout: opts.connect_timeout,
        tls,
        cancel: Some(&give_up),
    };
    let streams = std::thread::scope(|s| {
        let dials: Vec<_> = (0..PARTIES)
            .map(|j| {
                let give_up = &give_up;
                s.spawn(move || {
                    let r = hs.dial(Peer::Party(j), addrs[j]);
                    if r.is_err() {
                        give_up.store(true, Ordering::SeqCst);
                    }
                    r
                })
            })
            .collect();
        dials
            .into_iter()
            .map(|d| d.join().expect("dial thread"))
            .collect::<Result<Vec<_>, _>>()
    })?;
    let mut links = Vec::with_capacity(PARTIES);
    for (j, s) in streams.into_iter().enumerate() {
        links.push(RoleLink::new(Peer::Party(j), s, opts)?);
    }
    Ok(links.try_into().ok().expect("three links"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeySet;
    use std::time::Duration;

    #[test]
    fn a_certificate_of_another_role_is_refused_by_the_acceptor() {
        let keys = KeySet::generate().unwrap();
        let id = |role| {
            let (c, k) = keys.role(role);
            TlsIdentity::from_pem(keys.ca_cert.as_bytes(), c.as_bytes(), k.as_bytes(), role)
                .unwrap()
        };
        // The model owner's certificate, used to claim to be the client.
        let (c, k) = keys.role(Peer::ModelOwner);
        let impostor = TlsIdentity::impostor(
            keys.ca_cert.as_bytes(),
            c.as_bytes(),
            k.as_bytes(),
            Peer::Client,
        );
        let opts = MeshOptions {
            session: 1,
            connect_timeout: Duration::from_millis(1500),
            ..MeshOptions::default()
        };
        let server = PartyServer::from_listener(
            0,
            TcpListener::bind("127.0.0.1:0").unwrap(),
            opts,
            Some(id(Peer::Party(0))),
        );
        let addr = server.local_addr().unwrap();
        std::thread::scope(|s| {
            let waiting = s.spawn(|| server.accept(Peer::Client));
            let hs = Handshake {
                me: Peer::Client,
                session: 1,
                connect_timeout: opts.connect_timeout,
                tls: Some(&impostor),
                cancel: None,
            };
            let e = hs.dial(Peer::Party(0), addr).err().unwrap().to_string();
            assert!(
                e.contains("P0 refused us")
                    && e.contains("claims to be the client")
                    && e.contains("not issued to client.secdiff"),
                "{e}"
            );
            let e = waiting.join().unwrap().err().unwrap().to_string();
            assert!(
                e.contains("no connection from the client") && e.contains("claims"),
                "{e}"
            );
        });
    }
}
