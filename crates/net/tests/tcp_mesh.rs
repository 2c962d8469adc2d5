//! The TCP mesh between three parties in one process (threads) and, for the killed-party case,
//! with one party in a separate OS process.

use net::{MeshOptions, NetError, Peer, TcpMesh, Transport, PARTIES};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn opts(recv_timeout: Duration) -> MeshOptions {
    MeshOptions {
        session: 0x5eed,
        recv_timeout,
        connect_timeout: Duration::from_secs(20),
        max_frame: 1 << 30,
    }
}

fn listeners() -> (Vec<TcpListener>, [SocketAddr; PARTIES]) {
    let ls: Vec<_> = (0..PARTIES)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs = [0, 1, 2].map(|i| ls[i].local_addr().unwrap());
    (ls, addrs)
}

/// Three meshes, started in the order given (start order must not matter).
fn three(o: MeshOptions, order: [usize; 3]) -> [TcpMesh; 3] {
    let (ls, addrs) = listeners();
    std::thread::scope(|s| {
        let handles: Vec<_> = order
            .iter()
            .map(|&i| {
                let l = &ls[i];
                let h = s.spawn(move || (i, TcpMesh::establish(i, l, &addrs, &o, None).unwrap()));
                std::thread::sleep(Duration::from_millis(30));
                h
            })
            .collect();
        let mut out: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        out.sort_by_key(|(i, _)| *i);
        let mut it = out.into_iter().map(|(_, m)| m);
        [it.next().unwrap(), it.next().unwrap(), it.next().unwrap()]
    })
}

#[test]
fn messages_round_trip_between_all_pairs_in_order_and_are_metered() {
    let meshes = three(opts(Duration::from_secs(10)), [2, 0, 1]);
    std::thread::scope(|s| {
        for m in &meshes {
            s.spawn(move || {
                let me = m.id();
                let _scope = m.meter().scope("demo");
                for k in 0..5u8 {
                    m.send(m.next(), vec![me as u8, k, 1]).unwrap();
                    m.send(m.prev(), vec![me as u8, k, 2, 2]).unwrap();
                }
                for k in 0..5u8 {
                    assert_eq!(m.recv(m.prev()).unwrap(), vec![m.prev() as u8, k, 1]);
                    assert_eq!(m.recv(m.next()).unwrap(), vec![m.next() as u8, k, 2, 2]);
                }
                let t = m.meter().total();
                assert_eq!((t.bytes, t.messages, t.rounds), (35, 10, 1));
                assert_eq!(m.meter().by_label()[0].0, "demo");
                // A later piece of a message sent after receiving is not a new round; the
                // next ordinary send is.
                m.send_continuation(m.next(), vec![me as u8, 9]).unwrap();
                assert_eq!(m.recv(m.prev()).unwrap(), vec![m.prev() as u8, 9]);
                assert_eq!(m.meter().total().rounds, 1);
                m.send(m.next(), vec![me as u8, 10]).unwrap();
                assert_eq!(m.recv(m.prev()).unwrap(), vec![m.prev() as u8, 10]);
                let t = m.meter().total();
                assert_eq!((t.bytes, t.messages, t.rounds), (39, 12, 2));
            });
        }
    });
    assert!(matches!(
        meshes[0].send(0, vec![]),
        Err(NetError::NoSuchPeer { me: 0, peer: 0 })
    ));
}

#[test]
fn two_parties_exchanging_100_mb_each_at_once_do_not_deadlock() {
    let [a, b, _c] = three(opts(Duration::from_secs(60)), [0, 1, 2]);
    const N: usize = 100 << 20;
    let pattern = |seed: u8| (0..N).map(|i| (i as u8) ^ seed).collect::<Vec<u8>>();
    std::thread::scope(|s| {
        for (m, peer, seed) in [(&a, 1, 0x11u8), (&b, 0, 0x22)] {
            s.spawn(move || {
                // Both send before either receives: with blocking sends this would deadlock.
                m.send(peer, pattern(seed)).unwrap();
                m.send(peer, vec![seed]).unwrap();
                let got = m.recv(peer).unwrap();
                let other = if seed == 0x11 { 0x22 } else { 0x11 };
                assert!(got == pattern(other), "100 MB payload corrupted");
                assert_eq!(m.recv(peer).unwrap(), vec![other]);
            });
        }
    });
    assert_eq!(a.meter().total().bytes, N as u64 + 1);
}

#[test]
fn a_silent_peer_times_out_and_a_closed_peer_fails_at_once() {
    let timeout = Duration::from_secs(2);
    let [a, b, c] = three(opts(timeout), [1, 2, 0]);
    let t = Instant::now();
    let err = a.recv(1).unwrap_err();
    assert!(
        matches!(
            err,
            NetError::Timeout {
                peer: Peer::Party(1),
                ..
            }
        ),
        "{err}"
    );
    assert!(t.elapsed() >= timeout);

    // A message queued just before the peer closes still arrives, then the link reports closed.
    c.send(0, vec![7; 1000]).unwrap();
    drop(c);
    let t = Instant::now();
    assert_eq!(a.recv(2).unwrap(), vec![7; 1000]);
    let err = a.recv(2).unwrap_err();
    assert!(
        matches!(
            err,
            NetError::Closed {
                peer: Peer::Party(2)
            }
        ),
        "{err}"
    );
    let err = b.recv(2).unwrap_err();
    assert!(err.to_string().contains("P2"), "{err}");
    assert!(
        t.elapsed() < timeout / 2,
        "closed link waited for the timeout"
    );
    // An orderly close is not an abort: P0 and P1 keep working.
    a.send(1, vec![1]).unwrap();
    assert_eq!(b.recv(0).unwrap(), vec![1]);
}

const CHILD_ENV: &str = "SECDIFF_NET_TEST_CHILD";

/// Not a test on its own: the body of the child process in
/// `a_killed_party_process_is_named_by_both_others`.
#[test]
fn child_party_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let addrs: Vec<SocketAddr> = spec.split(',').map(|a| a.parse().unwrap()).collect();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mine = listener.local_addr().unwrap();
    println!("CHILD_ADDR={mine}");
    let all = [addrs[0], addrs[1], mine];
    let mesh =
        TcpMesh::establish(2, &listener, &all, &opts(Duration::from_secs(60)), None).unwrap();
    mesh.send(0, b"ready".to_vec()).unwrap();
    // Wait to be killed mid-protocol.
    let _ = mesh.recv(0);
    std::process::exit(3);
}

#[test]
fn a_killed_party_process_is_named_by_both_others() {
    let listeners: Vec<_> = (0..2)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let a0 = listeners[0].local_addr().unwrap();
    let a1 = listeners[1].local_addr().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_party_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{a0},{a1}"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let a2: SocketAddr = loop {
        let line = lines.next().expect("child exited early").unwrap();
        // libtest may print "test child_party_process ... " on the same line first.
        if let Some(at) = line.find("CHILD_ADDR=") {
            break line[at + "CHILD_ADDR=".len()..].trim().parse().unwrap();
        }
    };
    let addrs = [a0, a1, a2];
    let timeout = Duration::from_secs(30);
    let (p0, p1) = std::thread::scope(|s| {
        let l = &listeners;
        let h0 = s.spawn(move || TcpMesh::establish(0, &l[0], &addrs, &opts(timeout), None));
        let h1 = s.spawn(move || TcpMesh::establish(1, &l[1], &addrs, &opts(timeout), None));
        (h0.join().unwrap().unwrap(), h1.join().unwrap().unwrap())
    });
    assert_eq!(p0.recv(2).unwrap(), b"ready");

    let killed_at = Instant::now();
    child.kill().unwrap();
    child.wait().unwrap();
    // P0 talks to the dead party directly; P1 waits on P0, which is alive, and still learns that
    // P2 is the culprit (P0 relays an abort naming it).
    let e0 = p0.recv(2).unwrap_err();
    let e1 = p1.recv(0).unwrap_err();
    let waited = killed_at.elapsed();
    assert!(
        matches!(
            e0,
            NetError::Died {
                peer: Peer::Party(2)
            }
        ),
        "{e0}"
    );
    assert!(e1.to_string().contains("P2"), "{e1}");
    assert!(
        waited < timeout / 10,
        "took {waited:?}, timeout is {timeout:?}"
    );
    eprintln!("P0: {e0}\nP1: {e1}\nboth failed {waited:?} after the kill");
}

#[test]
fn small_and_large_messages_interleaved_keep_their_order() {
    // Small messages may be written by the caller and large ones by the sender thread; a small
    // one sent while a large one is queued must still arrive after it.
    let [a, b, _c] = three(opts(Duration::from_secs(30)), [0, 1, 2]);
    let sizes: Vec<usize> = (0..300)
        .map(|i| match i % 7 {
            0 => 3 << 20,
            3 => 70 << 10,
            _ => i % 50,
        })
        .collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            for (i, &n) in sizes.iter().enumerate() {
                a.send(1, vec![i as u8; n]).unwrap();
            }
        });
        for (i, &n) in sizes.iter().enumerate() {
            let m = b.recv(0).unwrap();
            assert_eq!(m.len(), n, "message {i}");
            assert!(m.iter().all(|&x| x == i as u8), "message {i} out of order");
        }
    });
}
