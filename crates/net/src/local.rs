//! An in-memory mesh of three parties over channels: the transport of tests and of the
//! single-process runner. It behaves like the TCP transport (ordered links, non-blocking sends,
//! receive timeouts that name the peer) without sockets.

use crate::{Meter, NetError, PartyId, Transport, PARTIES};
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// One party's end of an in-memory mesh.
pub struct LocalMesh {
    id: PartyId,
    to: [Option<Sender<Vec<u8>>>; PARTIES],
    from: [Option<Receiver<Vec<u8>>>; PARTIES],
    timeout: Duration,
    meter: Meter,
}

impl LocalMesh {
    /// Three connected endpoints, for parties 0, 1 and 2.
    pub fn triple(timeout: Duration) -> [LocalMesh; PARTIES] {
        let mut tx: [[Option<Sender<Vec<u8>>>; PARTIES]; PARTIES] = Default::default();
        let mut rx: [[Option<Receiver<Vec<u8>>>; PARTIES]; PARTIES] = Default::default();
        for a in 0..PARTIES {
            for b in 0..PARTIES {
                if a != b {
                    let (s, r) = unbounded();
                    tx[a][b] = Some(s);
                    rx[b][a] = Some(r);
                }
            }
        }
        let [t0, t1, t2] = tx;
        let [r0, r1, r2] = rx;
        let mk = |id, to, from| LocalMesh {
            id,
            to,
            from,
            timeout,
            meter: Meter::new(),
        };
        [mk(0, t0, r0), mk(1, t1, r1), mk(2, t2, r2)]
    }
}

impl LocalMesh {
    /// Queues `payload` for `to`, charged to the meter by `record`.
    fn send_metered(
        &self,
        to: PartyId,
        payload: Vec<u8>,
        record: fn(&Meter, usize),
    ) -> Result<(), NetError> {
        let link = self.to.get(to).and_then(|l| l.as_ref());
        let link = link.ok_or(NetError::NoSuchPeer {
            me: self.id,
            peer: to,
        })?;
        record(&self.meter, payload.len());
        link.send(payload)
            .map_err(|_| NetError::Closed { peer: to.into() })
    }
}

impl Transport for LocalMesh {
    fn id(&self) -> PartyId {
        self.id
    }

    fn send(&self, to: PartyId, payload: Vec<u8>) -> Result<(), NetError> {
        self.send_metered(to, payload, Meter::record_send)
    }

    fn send_continuation(&self, to: PartyId, payload: Vec<u8>) -> Result<(), NetError> {
        self.send_metered(to, payload, Meter::record_continuation)
    }

    fn recv(&self, from: PartyId) -> Result<Vec<u8>, NetError> {
        let link = self.from.get(from).and_then(|l| l.as_ref());
        let link = link.ok_or(NetError::NoSuchPeer {
            me: self.id,
            peer: from,
        })?;
        let msg = link.recv_timeout(self.timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => NetError::Timeout {
                peer: from.into(),
                timeout: self.timeout,
            },
            RecvTimeoutError::Disconnected => NetError::Closed { peer: from.into() },
        })?;
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

    #[test]
    fn messages_arrive_in_order_and_are_metered() {
        let [a, b, _c] = LocalMesh::triple(Duration::from_secs(1));
        {
            let _s = a.meter().scope("demo");
            a.send(1, vec![1; 10]).unwrap();
            a.send(1, vec![2; 5]).unwrap();
        }
        assert_eq!(b.recv(0).unwrap(), vec![1; 10]);
        assert_eq!(b.recv(0).unwrap(), vec![2; 5]);
        let t = a.meter().total();
        assert_eq!((t.bytes, t.messages, t.rounds), (15, 2, 1));
        assert_eq!(a.meter().by_label()[0].0, "demo");
    }

    #[test]
    fn a_silent_peer_times_out_with_its_name() {
        let [a, _b, _c] = LocalMesh::triple(Duration::from_millis(20));
        let err = a.recv(2).unwrap_err();
        assert!(err.to_string().contains("P2"), "{err}");
    }

    #[test]
    fn rounds_count_send_phases() {
        let [a, b, _c] = LocalMesh::triple(Duration::from_secs(1));
        a.send(1, vec![0]).unwrap();
        b.send(0, vec![0]).unwrap();
        a.recv(1).unwrap();
        a.send(1, vec![0]).unwrap();
        a.send(2, vec![0]).unwrap();
        assert_eq!(a.meter().total().rounds, 2);
    }

    #[test]
    fn continuation_pieces_are_not_rounds_and_keep_the_receive_phase() {
        let [a, b, _c] = LocalMesh::triple(Duration::from_secs(1));
        // a pipelines two messages in pieces: the first's pieces (round 1) interleave with the
        // replies it receives and with the second's pieces (round 2).
        a.send(1, vec![0; 3]).unwrap();
        b.send(0, vec![0]).unwrap();
        a.recv(1).unwrap();
        a.send(1, vec![0; 2]).unwrap();
        a.send_continuation(1, vec![0; 3]).unwrap();
        b.send(0, vec![0]).unwrap();
        a.recv(1).unwrap();
        a.send_continuation(1, vec![0; 2]).unwrap();
        let t = a.meter().total();
        assert_eq!((t.bytes, t.messages, t.rounds), (10, 4, 2));
        // Something was received since the last round began: the next plain send is a round.
        a.send(1, vec![0]).unwrap();
        assert_eq!(a.meter().total().rounds, 3);
        // A continuation with nothing before it counts as the first round.
        a.meter().reset();
        a.send_continuation(2, vec![0]).unwrap();
        assert_eq!(a.meter().total().rounds, 1);
    }
}
