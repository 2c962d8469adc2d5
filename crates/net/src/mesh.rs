//! [`TcpMesh`]: the [`Transport`] of one party over TCP (or TLS over TCP) to the other two.
//!
//! Party i dials every party j > i and accepts every party j < i, so each pair has exactly one
//! connection whatever the start order (dials retry until the connect timeout). If a link to one
//! peer fails abnormally (the peer died, sent garbage, or timed out on a write), this party sends
//! an abort frame naming that peer to the remaining peer, so the third party also stops with an
//! error naming the culprit rather than merely "P_i went away".
//!
//! Byte counts in the [`Meter`] are payload bytes only, so they are protocol-deterministic; each
//! message also costs a 32-byte frame header ([`HEADER_LEN`]) plus, with TLS, 22 bytes per
//! 16 KiB record.

use crate::frame::{FrameKind, HEADER_LEN};
use crate::handshake::Handshake;
use crate::link::{FailureHook, Link, LinkOptions, Outgoing};
use crate::tls::TlsIdentity;
use crate::{Meter, NetError, PartyId, Peer, Transport, PARTIES};
use crossbeam_channel::{unbounded, Sender};
use std::cell::Cell;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Session parameters of a mesh.
#[derive(Clone, Copy, Debug)]
pub struct MeshOptions {
    /// Identifies this run; frames and handshakes of any other session are refused.
    pub session: u64,
    /// Longest wait for a message (and for a peer to take our bytes) before giving up on it.
    pub recv_timeout: Duration,
    /// Longest wait for the other parties to come up and complete the handshake.
    pub connect_timeout: Duration,
    /// Largest payload accepted in one frame.
    pub max_frame: u64,
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            session: 0,
            recv_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            max_frame: crate::frame::DEFAULT_MAX_FRAME,
        }
    }
}

impl MeshOptions {
    pub(crate) fn link(&self) -> LinkOptions {
        LinkOptions {
            session: self.session,
            recv_timeout: self.recv_timeout,
            max_frame: self.max_frame,
        }
    }
}

/// One party's end of the three-party TCP mesh.
///
/// Dropping it (or calling [`TcpMesh::close`]) writes out every queued message and says goodbye
/// to both peers. Do that before the process exits: a party whose sockets merely vanish is
/// reported by the others as dead, and messages still queued are lost.
pub struct TcpMesh {
    id: PartyId,
    links: [Option<Link>; PARTIES],
    meter: Meter,
}

impl TcpMesh {
    /// Connects party `id`, listening on `listener`, to the parties at `addrs` (`addrs[id]` is
    /// ignored). Returns when both links are up, or fails after `opts.connect_timeout`.
    pub fn establish(
        id: PartyId,
        listener: &TcpListener,
        addrs: &[SocketAddr; PARTIES],
        opts: &MeshOptions,
        tls: Option<&TlsIdentity>,
    ) -> Result<TcpMesh, NetError> {
        if id >= PARTIES {
            return Err(NetError::Setup(format!("party id {id} is not 0, 1 or 2")));
        }
        if let Some(t) = tls {
            if t.role() != Peer::Party(id) {
                return Err(NetError::Tls(format!(
                    "P{id} was given the certificate of {}",
                    t.role()
                )));
            }
        } else {
            tracing::warn!(
                "P{id}: TLS is OFF: links to the other parties are unauthenticated plaintext \
                 (use only on loopback or for benchmarks)"
            );
        }
        // Set when one link fails, so the other dials and accepts stop early.
        let give_up = AtomicBool::new(false);
        let hs = Handshake {
            me: Peer::Party(id),
            session: opts.session,
            connect_timeout: opts.connect_timeout,
            tls,
            cancel: Some(&give_up),
        };
        let deadline = Instant::now() + opts.connect_timeout;
        let mut streams: [Option<crate::stream::Stream>; PARTIES] = Default::default();
        std::thread::scope(|scope| -> Result<(), NetError> {
            let dials: Vec<_> = (id + 1..PARTIES)
                .map(|j| {
                    let give_up = &give_up;
                    let dial = move || {
                        let r = hs.dial(Peer::Party(j), addrs[j]);
                        if r.is_err() {
                            give_up.store(true, Ordering::SeqCst);
                        }
                        r
                    };
                    (j, scope.spawn(dial))
                })
                .collect();
            let accepted = Cell::new([false; PARTIES]);
            let waiting_for = (0..id).map(|j| format!("P{j}")).collect::<Vec<_>>();
            let mut first_error = None;
            let mut last_refusal = String::new();
            while accepted.get().iter().filter(|&&a| a).count() < id {
                let pending: Vec<_> = waiting_for
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| !accepted.get()[*j])
                    .map(|(_, n)| n.as_str())
                    .collect();
                let admit = |role: Peer| match role {
                    Peer::Party(j) if j < id && !accepted.get()[j] => {
                        let mut a = accepted.get();
                        a[j] = true;
                        accepted.set(a);
                        Ok(())
                    }
                    Peer::Party(j) if j < id => Err(format!("P{j} is already connected to P{id}")),
                    other => Err(format!(
                        "P{id}'s mesh port takes only P0..P{} (lower ids dial), not {other}",
                        id.saturating_sub(1)
                    )),
                };
                let what = format!("{}{last_refusal}", pending.join(" and "));
                match hs.accept(listener, deadline, &what, &admit) {
                    Ok((Peer::Party(j), s)) => streams[j] = Some(s),
                    Ok(_) => unreachable!("admit only lets parties in"),
                    // Garbage, a port scanner, a failed TLS handshake: not one of us; keep
                    // waiting for the real parties.
                    Err(NetError::Stranger { addr, detail }) => {
                        tracing::warn!("P{id}: refused a connection from {addr}: {detail}");
                        last_refusal = format!(" (last refused: {addr}: {detail})");
                    }
                    // A party that proved its identity but is misconfigured: stop now.
                    Err(e) => {
                        give_up.store(true, Ordering::SeqCst);
                        first_error = Some(e);
                        break;
                    }
                }
            }
            for (j, dial) in dials {
                match dial.join() {
                    Ok(Ok(s)) => streams[j] = Some(s),
                    Ok(Err(e)) => {
                        first_error.get_or_insert(e);
                    }
                    Err(_) => {
                        first_error
                            .get_or_insert(NetError::Setup(format!("dialing P{j} panicked")));
                    }
                }
            }
            first_error.map_or(Ok(()), Err)
        })?;

        // Every link's outgoing channel exists before any link starts, so that each link's
        // failure hook can warn the other peer.
        let channels: Vec<_> = (0..PARTIES).map(|_| unbounded::<Outgoing>()).collect();
        let senders: Vec<Sender<Outgoing>> = channels.iter().map(|c| c.0.clone()).collect();
        let mut links: [Option<Link>; PARTIES] = Default::default();
        for (j, channel) in channels.into_iter().enumerate() {
            let Some(stream) = streams[j].take() else {
                continue;
            };
            let others: Vec<Sender<Outgoing>> = (0..PARTIES)
                .filter(|&k| k != j && k != id)
                .map(|k| senders[k].clone())
                .collect();
            let hook: FailureHook = Box::new(move |err: &NetError| {
                tracing::error!("P{id}: {err}; aborting the session");
                for tx in others {
                    let _ = tx.send(Outgoing::Relay(
                        FrameKind::Abort,
                        err.to_string().into_bytes(),
                    ));
                }
            });
            links[j] = Some(Link::spawn(
                Peer::Party(j),
                stream,
                opts.link(),
                channel,
                Some(hook),
            )?);
        }
        tracing::debug!(
            "P{id}: mesh up (session {:#x}, TLS {}, frame header {HEADER_LEN} bytes)",
            opts.session,
            if tls.is_some() { "on" } else { "off" }
        );
        Ok(TcpMesh {
            id,
            links,
            meter: Meter::new(),
        })
    }

    /// All three parties in this process over loopback TCP (plaintext, ephemeral ports): the
    /// real transport for tests and single-machine runs, with threads instead of processes.
    pub fn loopback(opts: &MeshOptions) -> Result<[TcpMesh; PARTIES], NetError> {
        let listeners = (0..PARTIES)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| NetError::Setup(format!("cannot listen on loopback: {e}")))?;
        let mut addrs = [SocketAddr::from(([127, 0, 0, 1], 0)); PARTIES];
        for (a, l) in addrs.iter_mut().zip(&listeners) {
            *a = l
                .local_addr()
                .map_err(|e| NetError::Setup(format!("loopback listener: {e}")))?;
        }
        let meshes = std::thread::scope(|s| {
            let handles: Vec<_> = listeners
                .iter()
                .enumerate()
                .map(|(i, l)| s.spawn(move || TcpMesh::establish(i, l, &addrs, opts, None)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("mesh thread"))
                .collect::<Result<Vec<_>, _>>()
        })?;
        Ok(meshes.try_into().ok().expect("three meshes"))
    }

    /// Binds `addrs[id]` and establishes the mesh.
    pub fn bind(
        id: PartyId,
        addrs: &[SocketAddr; PARTIES],
        opts: &MeshOptions,
        tls: Option<&TlsIdentity>,
    ) -> Result<TcpMesh, NetError> {
        let at = addrs
            .get(id)
            .ok_or_else(|| NetError::Setup(format!("party id {id} is not 0, 1 or 2")))?;
        let listener = TcpListener::bind(at)
            .map_err(|e| NetError::Setup(format!("P{id} cannot listen on {at}: {e}")))?;
        Self::establish(id, &listener, addrs, opts, tls)
    }

    /// Party `id` of the deployment in `cfg`: loads its TLS identity (if TLS is on), listens on
    /// its mesh address and connects to the other two.
    pub fn connect(cfg: &crate::PartiesConfig, id: PartyId) -> Result<TcpMesh, NetError> {
        if id >= PARTIES {
            return Err(NetError::Setup(format!("party id {id} is not 0, 1 or 2")));
        }
        let tls = cfg.tls_identity(Peer::Party(id))?;
        Self::bind(id, &cfg.mesh, &cfg.mesh_options(), tls.as_ref())
    }

    fn link(&self, peer: PartyId) -> Result<&Link, NetError> {
        self.links
            .get(peer)
            .and_then(|l| l.as_ref())
            .ok_or(NetError::NoSuchPeer { me: self.id, peer })
    }

    /// Writes out everything queued, says goodbye to both peers and closes the links.
    pub fn close(self) {
        drop(self)
    }

    /// Tells both peers that this party gives up, with the reason, so they stop at once
    /// instead of waiting for a timeout.
    pub fn abort(&self, reason: &str) {
        for link in self.links.iter().flatten() {
            let _ = link.send_frame(FrameKind::Abort, reason.as_bytes().to_vec());
        }
    }
}

impl Transport for TcpMesh {
    fn id(&self) -> PartyId {
        self.id
    }

    fn send(&self, to: PartyId, payload: Vec<u8>) -> Result<(), NetError> {
        let link = self.link(to)?;
        self.meter.record_send(payload.len());
        link.send(payload)
    }

    fn send_continuation(&self, to: PartyId, payload: Vec<u8>) -> Result<(), NetError> {
        let link = self.link(to)?;
        self.meter.record_continuation(payload.len());
        link.send(payload)
    }

    fn recv(&self, from: PartyId) -> Result<Vec<u8>, NetError> {
        let msg = self.link(from)?.recv()?;
        self.meter.record_recv();
        Ok(msg)
    }

    fn meter(&self) -> &Meter {
        &self.meter
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode_header, FrameKind};
    use crate::stream::Stream;
    use std::io::Write;

    pub(crate) fn listeners() -> (Vec<TcpListener>, [SocketAddr; PARTIES]) {
        let ls: Vec<_> = (0..PARTIES)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addrs = [0, 1, 2].map(|i| ls[i].local_addr().unwrap());
        (ls, addrs)
    }

    fn opts(session: u64, timeout_ms: u64) -> MeshOptions {
        MeshOptions {
            session,
            recv_timeout: Duration::from_millis(timeout_ms),
            connect_timeout: Duration::from_secs(10),
            max_frame: 1 << 20,
        }
    }

    /// P1 and P2 are real meshes; P0 is played by the test through raw streams to both.
    fn with_fake_p0(o: MeshOptions) -> (Stream, Stream, TcpMesh, TcpMesh) {
        let (ls, addrs) = listeners();
        std::thread::scope(|s| {
            let m1 = s.spawn(|| TcpMesh::establish(1, &ls[1], &addrs, &o, None).unwrap());
            let m2 = s.spawn(|| TcpMesh::establish(2, &ls[2], &addrs, &o, None).unwrap());
            let hs = Handshake {
                me: Peer::Party(0),
                session: o.session,
                connect_timeout: o.connect_timeout,
                tls: None,
                cancel: None,
            };
            let to1 = hs.dial(Peer::Party(1), addrs[1]).unwrap();
            let to2 = hs.dial(Peer::Party(2), addrs[2]).unwrap();
            (to1, to2, m1.join().unwrap(), m2.join().unwrap())
        })
    }

    fn bad_frame_detail(bytes: &[u8]) -> (String, NetError) {
        bad_frame_after(bytes, 0)
    }

    /// Sends raw `bytes` as P0 to P1; P1 first gets `good` valid messages, then the error.
    fn bad_frame_after(bytes: &[u8], good: usize) -> (String, NetError) {
        let (mut to1, _to2, m1, m2) = with_fake_p0(opts(5, 5_000));
        to1.write_all(bytes).unwrap();
        to1.flush().unwrap();
        drop(to1);
        for _ in 0..good {
            m1.recv(0).unwrap();
        }
        let started = Instant::now();
        let err = m1.recv(0).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        let detail = match &err {
            NetError::BadFrame { peer, detail } => {
                assert_eq!(*peer, Peer::Party(0));
                detail.clone()
            }
            other => panic!("expected a bad frame from P0, got {other:?}"),
        };
        // P1 warns P2, which then stops with an error that names P0 as the cause.
        let relayed = m2.recv(1).unwrap_err();
        assert!(
            matches!(&relayed, NetError::Aborted { peer: Peer::Party(1), reason } if reason.contains("P0")),
            "{relayed}"
        );
        // A dead link keeps failing at once.
        assert!(matches!(m1.recv(0), Err(NetError::BadFrame { .. })));
        (detail, relayed)
    }

    #[test]
    fn garbage_is_rejected_naming_the_sender() {
        let (d, _) = bad_frame_detail(
            b"GET / HTTP/1.1\r\nHost: example\r\nAccept: */*\r\nUser-Agent: x\r\n\r\n",
        );
        assert!(d.contains("bad magic"), "{d}");
    }

    #[test]
    fn a_truncated_frame_is_rejected() {
        let mut bytes = encode_header(FrameKind::Data, 5, 0, 100).to_vec();
        bytes.extend_from_slice(&[1; 60]);
        let (d, _) = bad_frame_detail(&bytes);
        assert!(
            d.contains("truncated frame #0") && d.contains("60 of 100"),
            "{d}"
        );
    }

    #[test]
    fn a_frame_of_another_session_is_rejected() {
        let (d, _) = bad_frame_detail(&encode_header(FrameKind::Data, 6, 0, 0));
        assert!(d.contains("session id 0x6, expected 0x5"), "{d}");
    }

    #[test]
    fn an_out_of_sequence_frame_is_rejected() {
        let mut bytes = encode_header(FrameKind::Data, 5, 0, 1).to_vec();
        bytes.push(42);
        bytes.extend_from_slice(&encode_header(FrameKind::Data, 5, 2, 0));
        let (d, _) = bad_frame_after(&bytes, 1);
        assert!(d.contains("sequence number 2, expected 1"), "{d}");
    }

    #[test]
    fn an_over_long_frame_is_rejected_before_allocating() {
        let (d, _) = bad_frame_detail(&encode_header(FrameKind::Data, 5, 0, 1 << 21));
        assert!(d.contains("more than the limit of 1048576"), "{d}");
    }

    #[test]
    fn loopback_gives_three_connected_parties() {
        let [a, b, c] = TcpMesh::loopback(&opts(1, 5000)).unwrap();
        a.send(2, vec![1]).unwrap();
        c.send(1, vec![2]).unwrap();
        b.send(0, vec![3]).unwrap();
        assert_eq!(c.recv(0).unwrap(), vec![1]);
        assert_eq!(b.recv(2).unwrap(), vec![2]);
        assert_eq!(a.recv(1).unwrap(), vec![3]);
        assert_eq!((a.id(), b.id(), c.id()), (0, 1, 2));
    }

    #[test]
    fn strangers_on_the_mesh_port_are_refused_without_stopping_the_mesh() {
        let (ls, addrs) = listeners();
        let mut junk = std::net::TcpStream::connect(addrs[2]).unwrap();
        junk.write_all(&[0x16, 3, 1, 0, 0x40, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
            .unwrap();
        let o = opts(3, 1000);
        let meshes: Vec<TcpMesh> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|i| {
                    let l = &ls[i];
                    s.spawn(move || TcpMesh::establish(i, l, &addrs, &o, None).unwrap())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        meshes[0].send(2, vec![5]).unwrap();
        assert_eq!(meshes[2].recv(0).unwrap(), vec![5]);
    }

    #[test]
    fn a_wrong_session_is_refused_at_the_handshake() {
        let (mut ls, addrs) = listeners();
        ls.pop(); // P2 is down: P1 keeps dialing it until P0's refusal makes it give up.
        let good = opts(1, 1000);
        let err = std::thread::scope(|s| {
            let p1 = s.spawn(|| TcpMesh::establish(1, &ls[1], &addrs, &good, None));
            let hs = Handshake {
                me: Peer::Party(0),
                session: 2,
                connect_timeout: Duration::from_secs(5),
                tls: None,
                cancel: None,
            };
            let dial = hs.dial(Peer::Party(1), addrs[1]);
            let p1 = p1.join().unwrap().err().expect("P1 must fail").to_string();
            assert!(
                p1.contains("handshake with P0 failed: P0 is in session 0x2"),
                "{p1}"
            );
            dial.err().expect("P1 must refuse session 2")
        });
        let msg = err.to_string();
        assert!(
            msg.contains("P1 refused us") && msg.contains("session 0x2"),
            "{msg}"
        );
    }
}
