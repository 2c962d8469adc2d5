//! Mutually authenticated TLS between the parties: round trips, large simultaneous transfers,
//! and refusal of anyone without a certificate of this deployment for the role it claims.

use net::{KeySet, MeshOptions, NetError, PartiesConfig, Peer, TcpMesh, TlsIdentity, Transport};
use std::net::{SocketAddr, TcpListener};
use std::sync::OnceLock;
use std::time::Duration;

fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| KeySet::generate().unwrap())
}

fn identity(set: &KeySet, role: Peer) -> TlsIdentity {
    let (cert, key) = set.role(role);
    TlsIdentity::from_pem(
        set.ca_cert.as_bytes(),
        cert.as_bytes(),
        key.as_bytes(),
        role,
    )
    .unwrap()
}

fn opts() -> MeshOptions {
    MeshOptions {
        session: 77,
        recv_timeout: Duration::from_secs(60),
        // Refused parties leave the third one waiting this long for its missing peer.
        connect_timeout: Duration::from_secs(2),
        max_frame: 1 << 30,
    }
}

type Started = Vec<Result<TcpMesh, NetError>>;

/// Starts the three parties with the given identities (None = plaintext).
fn start(ids: [Option<TlsIdentity>; 3]) -> Started {
    let ls: Vec<_> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: [SocketAddr; 3] = [0, 1, 2].map(|i| ls[i].local_addr().unwrap());
    let o = opts();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|i| {
                let (l, id) = (&ls[i], &ids[i]);
                s.spawn(move || TcpMesh::establish(i, l, &addrs, &o, id.as_ref()))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn all_tls() -> [TcpMesh; 3] {
    let k = keys();
    let ms: Vec<_> = start([0, 1, 2].map(|i| Some(identity(k, Peer::Party(i)))))
        .into_iter()
        .map(|m| m.unwrap())
        .collect();
    ms.try_into().ok().unwrap()
}

#[test]
fn tls_mesh_round_trips_and_survives_100_mb_each_way_at_once() {
    let [a, b, c] = all_tls();
    c.send(0, b"from P2".to_vec()).unwrap();
    assert_eq!(a.recv(2).unwrap(), b"from P2");
    const N: usize = 100 << 20;
    std::thread::scope(|s| {
        for (m, peer, seed) in [(&a, 1, 3u8), (&b, 0, 5u8)] {
            s.spawn(move || {
                m.send(peer, (0..N).map(|i| (i as u8).wrapping_mul(seed)).collect())
                    .unwrap();
                let other = if seed == 3 { 5u8 } else { 3 };
                let got = m.recv(peer).unwrap();
                assert_eq!(got.len(), N);
                assert!(got
                    .iter()
                    .enumerate()
                    .all(|(i, &x)| x == (i as u8).wrapping_mul(other)));
            });
        }
    });
    // Orderly TLS close (close_notify + goodbye frame) is reported as closed, not as a death.
    drop(c);
    let e = a.recv(2).unwrap_err();
    assert!(
        matches!(
            e,
            NetError::Closed {
                peer: Peer::Party(2)
            }
        ),
        "{e}"
    );
}

#[test]
fn a_party_with_a_certificate_from_another_ca_is_refused() {
    let foreign = KeySet::generate().unwrap();
    let k = keys();
    let r = start([
        Some(identity(&foreign, Peer::Party(0))),
        Some(identity(k, Peer::Party(1))),
        Some(identity(k, Peer::Party(2))),
    ]);
    let e0 = r[0].as_ref().err().expect("P0 must fail").to_string();
    assert!(
        e0.contains("handshake with P1 failed") || e0.contains("handshake with P2 failed"),
        "{e0}"
    );
    assert!(
        e0.to_lowercase().contains("certificate") || e0.contains("issuer"),
        "{e0}"
    );
    for e in [&r[1], &r[2]] {
        assert!(e.is_err(), "a party accepted a foreign certificate");
    }
}

#[test]
fn a_plaintext_party_cannot_join_a_tls_mesh() {
    let k = keys();
    let r = start([
        None,
        Some(identity(k, Peer::Party(1))),
        Some(identity(k, Peer::Party(2))),
    ]);
    let e0 = r[0].as_ref().err().expect("P0 must fail").to_string();
    assert!(
        e0.contains("not a secdiff peer") || e0.contains("closed"),
        "{e0}"
    );
    assert!(r[1].is_err() && r[2].is_err());
}

#[test]
fn a_certificate_of_another_role_is_refused() {
    let k = keys();
    let (cert, key) = k.role(Peer::Party(1));
    let e = TlsIdentity::from_pem(
        k.ca_cert.as_bytes(),
        cert.as_bytes(),
        key.as_bytes(),
        Peer::Party(0),
    )
    .err()
    .expect("P1's certificate cannot serve P0");
    assert!(e.to_string().contains("not issued to p0.secdiff"), "{e}");
    // A party given the client's identity is refused before any connection.
    let (ls, addr) = (
        TcpListener::bind("127.0.0.1:0").unwrap(),
        "127.0.0.1:1".parse().unwrap(),
    );
    let e = TcpMesh::establish(
        0,
        &ls,
        &[addr; 3],
        &opts(),
        Some(&identity(k, Peer::Client)),
    )
    .err()
    .unwrap();
    assert!(
        e.to_string()
            .contains("P0 was given the certificate of the client"),
        "{e}"
    );
}

fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<_> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

#[test]
fn a_config_with_a_key_directory_runs_a_tls_mesh() {
    let dir = std::env::temp_dir().join(format!("secdiff-net-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let written = keys().write_dir(&dir.join("keys"), false).unwrap();
    assert_eq!(written.len(), 12);
    let again = keys().write_dir(&dir.join("keys"), false).err().unwrap();
    assert!(again.to_string().contains("already exists"), "{again}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("keys/p1.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "private keys must not be readable by others"
        );
    }
    let p = free_ports(6);
    let mut text = "session = 3\ntls_dir = \"keys\"\nrecv_timeout_secs = 5\n".to_string();
    for i in 0..3 {
        text += &format!(
            "[[party]]\nid = {i}\nmesh = \"127.0.0.1:{}\"\nclient = \"127.0.0.1:{}\"\n",
            p[i],
            p[3 + i]
        );
    }
    let path = dir.join("parties.toml");
    std::fs::write(&path, text).unwrap();
    let cfg = PartiesConfig::load(&path).unwrap();
    assert_eq!(cfg.tls_dir.as_deref(), Some(dir.join("keys").as_path()));
    let meshes: Vec<TcpMesh> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|i| {
                let cfg = &cfg;
                s.spawn(move || TcpMesh::connect(cfg, i).unwrap())
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    meshes[1].send(2, vec![1, 2, 3]).unwrap();
    assert_eq!(meshes[2].recv(1).unwrap(), vec![1, 2, 3]);

    // The client reaches every party's client port with its own certificate.
    std::thread::scope(|s| {
        let parties: Vec<_> = (0..3)
            .map(|i| {
                let cfg = &cfg;
                s.spawn(move || {
                    let server = net::PartyServer::bind(cfg, i).unwrap();
                    let client = server.accept(Peer::Client).unwrap();
                    assert_eq!(client.recv().unwrap(), vec![i as u8]);
                })
            })
            .collect();
        let links = net::connect_parties(&cfg, Peer::Client).unwrap();
        for (i, l) in links.iter().enumerate() {
            l.send(vec![i as u8]).unwrap();
        }
        for p in parties {
            p.join().unwrap();
        }
    });

    std::fs::remove_file(dir.join("keys/p2.key")).unwrap();
    let e = cfg.tls_identity(Peer::Party(2)).err().unwrap().to_string();
    assert!(e.contains("p2.key for P2 does not exist"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
