//! Loopback benchmark of the TCP mesh, plaintext and TLS side by side in one run, next to a bare
//! TCP socket as the reference: throughput of one large message, of two large messages crossing
//! at once, and the latency of a small ping-pong. Each figure is the best of several rounds
//! that alternate between the three set-ups, so load from other processes hits all of them.
//!
//! `cargo run --release -p net --example net_bench -- [MB per message, default 256] [round trips, default 2000]`

use net::{KeySet, MeshOptions, TcpMesh, TlsIdentity, Transport};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

fn meshes(tls: Option<&KeySet>) -> Vec<TcpMesh> {
    let ls: Vec<_> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: [SocketAddr; 3] = [0, 1, 2].map(|i| ls[i].local_addr().unwrap());
    let opts = MeshOptions {
        session: 1,
        recv_timeout: Duration::from_secs(120),
        ..MeshOptions::default()
    };
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|i| {
                let l = &ls[i];
                s.spawn(move || {
                    let id = tls.map(|k| {
                        let role = net::Peer::Party(i);
                        let (c, key) = k.role(role);
                        TlsIdentity::from_pem(
                            k.ca_cert.as_bytes(),
                            c.as_bytes(),
                            key.as_bytes(),
                            role,
                        )
                        .unwrap()
                    });
                    TcpMesh::establish(i, l, &addrs, &opts, id.as_ref()).unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

struct Figures {
    one_way_mb_s: f64,
    crossing_mb_s: f64,
    ping_us: f64,
}

fn measure(m: &[TcpMesh], bytes: usize, pings: usize) -> Figures {
    let (a, b) = (&m[0], &m[1]);
    let payload = vec![0xa5u8; bytes];
    // One way: P0 sends, P1 acknowledges receipt of the whole message.
    let mut best = f64::MAX;
    {
        let copy = payload.clone();
        let t = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(b.recv(0).unwrap().len(), bytes);
                b.send(0, vec![1]).unwrap();
            });
            a.send(1, copy).unwrap();
            a.recv(1).unwrap();
        });
        best = best.min(t.elapsed().as_secs_f64());
    }
    let one_way_mb_s = bytes as f64 / 1e6 / best;
    // Crossing: both send at once (the MPC pattern), time until both have received.
    let mut best = f64::MAX;
    {
        let copies = [payload.clone(), payload.clone()];
        let t = Instant::now();
        std::thread::scope(|s| {
            for ((me, peer), p) in [(a, 1), (b, 0)].into_iter().zip(copies) {
                s.spawn(move || {
                    me.send(peer, p).unwrap();
                    assert_eq!(me.recv(peer).unwrap().len(), bytes);
                });
            }
        });
        best = best.min(t.elapsed().as_secs_f64());
    }
    let crossing_mb_s = 2.0 * bytes as f64 / 1e6 / best;
    // Ping-pong of 8-byte messages.
    let t = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..pings {
                let m = b.recv(0).unwrap();
                b.send(0, m).unwrap();
            }
        });
        for i in 0..pings {
            a.send(1, (i as u64).to_le_bytes().to_vec()).unwrap();
            a.recv(1).unwrap();
        }
    });
    let ping_us = t.elapsed().as_secs_f64() * 1e6 / pings as f64;
    Figures {
        one_way_mb_s,
        crossing_mb_s,
        ping_us,
    }
}

/// The same three measurements on bare TCP sockets (no framing, threads or channels).
fn measure_raw(bytes: usize, pings: usize) -> Figures {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let mut b = l.accept().unwrap().0;
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    let payload = vec![0xa5u8; bytes];
    let transfer = |from: &mut TcpStream, to: &mut TcpStream| {
        let mut to = to.try_clone().unwrap();
        let h = std::thread::spawn(move || {
            let mut buf = vec![0u8; bytes];
            to.read_exact(&mut buf).unwrap();
        });
        from.write_all(&payload).unwrap();
        h.join().unwrap();
    };
    let t = Instant::now();
    transfer(&mut a, &mut b);
    let one_way_mb_s = bytes as f64 / 1e6 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    std::thread::scope(|s| {
        let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
        let (mut a3, mut b3) = (a.try_clone().unwrap(), b.try_clone().unwrap());
        s.spawn(move || transfer(&mut a2, &mut b2));
        s.spawn(move || transfer(&mut b3, &mut a3));
    });
    let crossing_mb_s = 2.0 * bytes as f64 / 1e6 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut echo = b.try_clone().unwrap();
    let h = std::thread::spawn(move || {
        let mut m = [0u8; 8];
        for _ in 0..pings {
            echo.read_exact(&mut m).unwrap();
            echo.write_all(&m).unwrap();
        }
    });
    let mut m = [0u8; 8];
    for i in 0..pings {
        a.write_all(&(i as u64).to_le_bytes()).unwrap();
        a.read_exact(&mut m).unwrap();
    }
    h.join().unwrap();
    let ping_us = t.elapsed().as_secs_f64() * 1e6 / pings as f64;
    Figures {
        one_way_mb_s,
        crossing_mb_s,
        ping_us,
    }
}

fn best(a: Figures, b: Figures) -> Figures {
    Figures {
        one_way_mb_s: a.one_way_mb_s.max(b.one_way_mb_s),
        crossing_mb_s: a.crossing_mb_s.max(b.crossing_mb_s),
        ping_us: a.ping_us.min(b.ping_us),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mb: usize = args
        .next()
        .map_or(256, |a| a.parse().expect("MB per message"));
    let pings: usize = args
        .next()
        .map_or(2000, |a| a.parse().expect("round trips"));
    let keys = KeySet::generate().unwrap();
    let (plain_mesh, tls_mesh) = (meshes(None), meshes(Some(&keys)));
    let bytes = mb << 20;
    let (mut raw, mut plain, mut tls) = (
        measure_raw(bytes, pings),
        measure(&plain_mesh, bytes, pings),
        measure(&tls_mesh, bytes, pings),
    );
    for _ in 0..2 {
        raw = best(raw, measure_raw(bytes, pings));
        plain = best(plain, measure(&plain_mesh, bytes, pings));
        tls = best(tls, measure(&tls_mesh, bytes, pings));
    }
    println!(
        "loopback, {mb} MiB messages, {pings} ping-pongs of 8 bytes; best of 3 alternating rounds"
    );
    println!(
        "{:<34} {:>11} {:>11} {:>11} {:>10} {:>10}",
        "", "bare TCP", "mesh", "mesh+TLS", "mesh/bare", "TLS/mesh"
    );
    for (name, r, p, t) in [
        (
            "one message, one way (MB/s)",
            raw.one_way_mb_s,
            plain.one_way_mb_s,
            tls.one_way_mb_s,
        ),
        (
            "two crossing at once (MB/s, sum)",
            raw.crossing_mb_s,
            plain.crossing_mb_s,
            tls.crossing_mb_s,
        ),
        (
            "ping-pong round trip (us)",
            raw.ping_us,
            plain.ping_us,
            tls.ping_us,
        ),
    ] {
        println!(
            "{name:<34} {r:>11.1} {p:>11.1} {t:>11.1} {:>10.2} {:>10.2}",
            p / r,
            t / p
        );
    }
}
