//! The protocol over TCP loopback with a stand-in model (the U-Net version is tested in the CLI
//! crate): results match the plaintext step, and a server that refuses, disconnects or goes
//! silent gives the client a clear error.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use he::protocol::{ClientModel, HeClient, ServerModel, SessionInfo, Tensor};
use he::step::StepCoefficients;
use he::wire::FramedStream;
use he::{CkksContext, ClientKeys, Error, Preset, Result};

/// Head: features = 2x; tail: eps = features / 4 (so eps = x / 2).
struct Toy(SessionInfo);

impl ClientModel for Toy {
    fn session(&self) -> &SessionInfo {
        &self.0
    }
    fn features(&self, x: &[f32], _t: usize) -> Result<Vec<Tensor>> {
        Tensor::new(
            self.0.latent_shape.clone(),
            x.iter().map(|v| 2.0 * v).collect(),
        )
        .map(|t| vec![t])
    }
}

impl ServerModel for Toy {
    fn check(&self, s: &SessionInfo) -> Result<()> {
        if s.model != "toy" {
            return Err(Error::Other(format!("unknown model `{}`", s.model)));
        }
        Ok(())
    }
    fn eps(&self, _s: &SessionInfo, f: &[Tensor], _t: usize) -> Result<Vec<f32>> {
        Ok(f[0].data.iter().map(|v| v / 4.0).collect())
    }
}

fn session(model: &str) -> SessionInfo {
    SessionInfo {
        model: model.into(),
        weights_sha256: "00".repeat(32),
        split: "identity".into(),
        latent_shape: vec![1, 1, 8, 8],
        labels: vec![0],
    }
}

fn start_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        he::tcp::serve(
            listener,
            Arc::new(Toy(session("toy"))),
            Duration::from_secs(30),
            Some(2),
            Arc::new(|_, _| {}),
        )
    });
    addr
}

fn keys() -> ClientKeys {
    ClientKeys::generate(&CkksContext::from_preset(Preset::HeDiff).unwrap()).unwrap()
}

#[test]
fn steps_over_tcp_match_plaintext() {
    let addr = start_server();
    let stream = he::tcp::connect(&addr, Duration::from_secs(30)).unwrap();
    let model = Toy(session("toy"));
    let mut client = HeClient::open(stream, keys(), session("toy"), 0.01).unwrap();
    let mut x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.3).sin()).collect();
    let coeff = StepCoefficients { a: 1.1, b: -0.4 };
    for _ in 0..3 {
        let want: Vec<f32> = x.iter().map(|v| 1.1 * v - 0.4 * v / 2.0).collect();
        x = client.step(&model, &x, 500, coeff).unwrap();
        let err = x
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-3, "error {err}");
    }
    let (sent, received) = client.traffic();
    assert!(
        sent > 3 * 400_000 && received > 3 * 400_000,
        "{sent} {received}"
    );
    client.close().unwrap();

    // The server refuses an unknown model with a message the client sees.
    let stream = he::tcp::connect(&addr, Duration::from_secs(30)).unwrap();
    match HeClient::open(stream, keys(), session("sd-xl"), 0.01) {
        Err(Error::Remote { peer, message }) => {
            assert_eq!(peer, "server");
            assert!(message.contains("unknown model `sd-xl`"), "{message}");
        }
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn server_that_disconnects_mid_session_is_a_clear_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Answers Hello, then hangs up on the first step.
    std::thread::spawn(move || {
        let (s, a) = listener.accept().unwrap();
        let mut f = FramedStream::new(s, "client", a);
        f.expect(he::wire::Kind::Hello).unwrap();
        f.send(he::wire::Kind::Ready, &[]).unwrap();
        f.expect(he::wire::Kind::Step).unwrap();
    });
    let stream = he::tcp::connect(&addr, Duration::from_secs(30)).unwrap();
    let model = Toy(session("toy"));
    let mut client = HeClient::open(stream, keys(), session("toy"), 0.01).unwrap();
    let err = client.step(&model, &[0.5; 64], 10, StepCoefficients { a: 1.0, b: 0.0 });
    match err {
        Err(Error::Network { peer, detail }) => {
            assert!(peer.starts_with("server 127.0.0.1"), "{peer}");
            assert!(detail.contains("connection closed"), "{detail}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn silent_server_times_out_and_nothing_listening_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hold = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(2));
        drop(s);
    });
    let stream = he::tcp::connect(&addr, Duration::from_millis(300)).unwrap();
    match HeClient::open(stream, keys(), session("toy"), 0.01) {
        Err(Error::Network { detail, .. }) => assert!(detail.contains("timed out"), "{detail}"),
        other => panic!("{:?}", other.err()),
    }
    hold.join().unwrap();
    // The port is closed now.
    assert!(matches!(
        he::tcp::connect(&addr, Duration::from_secs(1)),
        Err(Error::Network { .. })
    ));
}
