//! Links from the client and the model owner to the three parties.

use net::{
    connect_parties_at, KeySet, MeshOptions, Message, NetError, PartyServer, Peer, RoleLink,
    TlsIdentity,
};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

fn opts() -> MeshOptions {
    MeshOptions {
        session: 42,
        recv_timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(10),
        max_frame: 1 << 30,
    }
}

fn identity(keys: Option<&KeySet>, role: Peer) -> Option<TlsIdentity> {
    keys.map(|k| {
        let (c, key) = k.role(role);
        TlsIdentity::from_pem(k.ca_cert.as_bytes(), c.as_bytes(), key.as_bytes(), role).unwrap()
    })
}

fn servers(keys: Option<&KeySet>) -> (Vec<PartyServer>, [SocketAddr; 3]) {
    let s: Vec<_> = (0..3)
        .map(|i| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            PartyServer::from_listener(i, l, opts(), identity(keys, Peer::Party(i)))
        })
        .collect();
    let addrs = [0, 1, 2].map(|i| s[i].local_addr().unwrap());
    (s, addrs)
}

fn connect(role: Peer, addrs: &[SocketAddr; 3], keys: Option<&KeySet>) -> [RoleLink; 3] {
    connect_parties_at(addrs, role, &opts(), identity(keys, role).as_ref()).unwrap()
}

/// Client and model owner both connect; each party gets weights and input shares, answers with
/// output shares that only the client receives.
fn session(keys: Option<&KeySet>) {
    let (servers, addrs) = servers(keys);
    std::thread::scope(|s| {
        for server in &servers {
            s.spawn(move || {
                let links = server
                    .accept_all(&[Peer::ModelOwner, Peer::Client])
                    .unwrap();
                let (owner, client) = (&links[0], &links[1]);
                assert_eq!(owner.peer(), Peer::ModelOwner);
                let w = owner.recv_shares("w", &[2, 2]).unwrap();
                let job = client.recv_msg().unwrap();
                assert_eq!(job, Message::Control("{\"steps\":2}".into()));
                let x = client.recv_shares("x_T", &[1, 1000]).unwrap();
                let y: Vec<u64> = x.iter().map(|v| v.wrapping_mul(w[0])).collect();
                client
                    .send_msg(&Message::shares("x_0", &[1, 1000], y).unwrap())
                    .unwrap();
            });
        }
        let owner = s.spawn(|| {
            let links = connect(Peer::ModelOwner, &addrs, keys);
            for (j, l) in links.iter().enumerate() {
                assert_eq!(l.peer(), Peer::Party(j));
                let w = vec![j as u64 + 2, 0, 0, 1];
                l.send_msg(&Message::shares("w", &[2, 2], w).unwrap())
                    .unwrap();
            }
            links
        });
        let links = connect(Peer::Client, &addrs, keys);
        for l in &links {
            l.send_msg(&Message::Control("{\"steps\":2}".into()))
                .unwrap();
            let x: Vec<u64> = (0..1000u64)
                .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .collect();
            l.send_msg(&Message::shares("x_T", &[1, 1000], x).unwrap())
                .unwrap();
        }
        for (j, l) in links.iter().enumerate() {
            let out = l.recv_shares("x_0", &[1, 1000]).unwrap();
            assert_eq!(
                out[3],
                3u64.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    .wrapping_mul(j as u64 + 2)
            );
            // 12-byte control message + shares header (1 + 2 + 3 + 1 + 16) + 8000 bytes.
            assert_eq!(l.meter().total().bytes, 12 + 23 + 8000);
        }
        drop(owner.join().unwrap());
    });
}

#[test]
fn client_and_model_owner_exchange_shares_with_all_parties_plaintext() {
    session(None);
}

#[test]
fn client_and_model_owner_exchange_shares_with_all_parties_over_tls() {
    let keys = KeySet::generate().unwrap();
    session(Some(&keys));
}

#[test]
fn wrong_shapes_and_wrong_roles_get_clear_errors_on_both_sides() {
    let (servers, addrs) = servers(None);
    std::thread::scope(|s| {
        let others: Vec<_> = servers[1..]
            .iter()
            .map(|srv| s.spawn(move || srv.accept(Peer::Client).unwrap()))
            .collect();
        let p0 = s.spawn(|| {
            let client = servers[0].accept(Peer::Client).unwrap();
            let e = client.recv_shares("x_T", &[4, 1, 28, 28]).unwrap_err();
            assert!(
                matches!(
                    e,
                    NetError::Protocol {
                        peer: Peer::Client,
                        ..
                    }
                ),
                "{e}"
            );
            e.to_string()
        });
        // The parties wait for the client, not the owner: refused with a reason.
        let owner = connect_parties_at(&addrs, Peer::ModelOwner, &opts(), None);
        let e = owner
            .err()
            .expect("P0 must refuse the model owner")
            .to_string();
        assert!(
            e.contains("P0 refused us: P0 is waiting for the client, not for the model owner"),
            "{e}"
        );
        let links = connect_parties_at(&addrs, Peer::Client, &opts(), None).unwrap_or_else(|e| {
            panic!("client could not connect: {e}");
        });
        links[0]
            .send_msg(&Message::shares("x_T", &[4, 28, 28], vec![0; 4 * 28 * 28]).unwrap())
            .unwrap();
        let party_side = p0.join().unwrap();
        assert!(party_side.contains("the client sent an unexpected message: shares \"x_T\" have shape [4, 28, 28], expected [4, 1, 28, 28]"), "{party_side}");
        let e = links[0].recv_msg().unwrap_err();
        assert!(
            matches!(&e, NetError::Remote { peer: Peer::Party(0), message } if message.contains("expected [4, 1, 28, 28]")),
            "{e}"
        );
        for h in others {
            h.join().unwrap();
        }
    });
}

#[test]
fn a_party_that_goes_away_is_named_to_the_client_at_once() {
    let (servers, addrs) = servers(None);
    let links = std::thread::scope(|s| {
        let hs: Vec<_> = servers
            .iter()
            .map(|srv| s.spawn(move || srv.accept(Peer::Client).unwrap()))
            .collect();
        let links = connect_parties_at(&addrs, Peer::Client, &opts(), None).unwrap();
        let party_links: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        drop(party_links); // every party closes its client link
        links
    });
    let t = Instant::now();
    for (j, l) in links.iter().enumerate() {
        let e = l.recv().unwrap_err();
        assert!(
            matches!(e, NetError::Closed { peer: Peer::Party(p) } if p == j),
            "{e}"
        );
    }
    assert!(t.elapsed() < Duration::from_secs(2));
}
