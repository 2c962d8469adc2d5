//! HE mode end to end on the shipped cipherdm-mnist model: a client and a server over TCP
//! loopback, the U-Net cut at a split point, against the plaintext sampler from the same x_T.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use diffusion::{DdimConfig, Sampler, SeededNoise, Spacing};
use he::model::{LoadedModel, UNetHead, UNetServer};
use he::protocol::HeClient;
use he::sampler::{plan, sample};
use he::{CkksContext, ClientKeys, Error, Preset};
use nn::unet::one_hot;
use nn::weights::TensorFile;
use nn::{Backend, Plain, PlainTensor};

fn model() -> Arc<LoadedModel> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/cipherdm-mnist");
    LoadedModel::load(dir).unwrap()
}

/// A server thread for `sessions` sessions; returns its address.
fn server(model: Arc<LoadedModel>, sessions: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        he::tcp::serve(
            listener,
            Arc::new(UNetServer::new(vec![model])),
            Duration::from_secs(60),
            Some(sessions),
            Arc::new(|_, _| {}),
        )
    });
    addr
}

fn keys() -> ClientKeys {
    ClientKeys::generate(&CkksContext::from_preset(Preset::HeDiff).unwrap()).unwrap()
}

/// The reference's x_T for DDIM-50 (4 images, NHWC in the file) as NCHW, and its labels.
fn reference_x_t() -> (Vec<f32>, Vec<usize>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/cipherdm-mnist/cases.safetensors"
    );
    let cases = TensorFile::open(path).unwrap();
    let (shape, data) = cases.f32("ddim50.x_T").unwrap();
    let x = PlainTensor::new(&shape, data).unwrap();
    let x = Plain.permute(&x, &[0, 3, 1, 2]).unwrap().into_vec();
    let y = cases.i64("ddim50.y").unwrap().1;
    (x, y.iter().map(|&v| v as usize).collect())
}

#[test]
fn he_sample_matches_plain_sample_from_the_same_x_t() {
    let model = model();
    let (x_t, labels) = reference_x_t();
    let n = labels.len();
    let sampler = Sampler::Ddim(DdimConfig {
        steps: 50,
        eta: 0.0,
        spacing: Spacing::Uniform,
        clip_x0: false,
    });
    // Plain mode: the diffusion crate's sampler on the whole U-Net.
    let b = Plain;
    let y = PlainTensor::new(&[n, 2], one_hot(&labels, 2).unwrap()).unwrap();
    let plain = sampler
        .sample(
            &b,
            &model.schedule,
            PlainTensor::new(&[n, 1, 28, 28], x_t.clone()).unwrap(),
            |x, t| model.unet.forward(&b, x, &vec![t; n], Some(&y)),
            &mut SeededNoise::new(0),
            |_| {},
        )
        .unwrap()
        .into_vec();

    let addr = server(model.clone(), 2);
    let steps = plan(&sampler, &model.schedule).unwrap();
    // The default split (after the stem) and a deeper one (after two residual blocks and the
    // downsample of the first level).
    for split_name in ["init_conv", "downs_2"] {
        let split = model.split_point(split_name).unwrap();
        let session = model.session(split, &labels, n);
        let head = UNetHead::new(model.clone(), session.clone()).unwrap();
        let stream = he::tcp::connect(&addr, Duration::from_secs(60)).unwrap();
        let mut client = HeClient::open(stream, keys(), session, 0.01).unwrap();
        let trajectory = sample(
            &mut client,
            &head,
            x_t.clone(),
            &steps,
            &mut |_| unreachable!("DDIM eta 0 draws no noise"),
            &mut |_| {},
        )
        .unwrap();
        client.close().unwrap();
        assert_eq!(trajectory.len(), 51);
        let he_x0 = trajectory.last().unwrap();
        let err = he_x0
            .iter()
            .zip(&plain)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-2, "split {split_name}: max |he - plain| = {err}");
    }
}

#[test]
fn server_refuses_mismatched_sessions_with_clear_errors() {
    let model = model();
    let addr = server(model.clone(), 3);
    let split = model.split_point("init_conv").unwrap();
    let open = |session| {
        let stream = he::tcp::connect(&addr, Duration::from_secs(60)).unwrap();
        HeClient::open(stream, keys(), session, 0.01).err()
    };
    let mut other_weights = model.session(split, &[0, 1], 2);
    other_weights.weights_sha256 = "ab".repeat(32);
    let mut bad_split = model.session(split, &[0, 1], 2);
    bad_split.split = "ups_3".into();
    let bad_label = model.session(split, &[0, 7], 2);
    for (session, needle) in [
        (other_weights, "weights"),
        (bad_split, "unknown split point `ups_3`"),
        (bad_label, "outside the model's 2 classes"),
    ] {
        match open(session) {
            Some(Error::Remote { message, .. }) => {
                assert!(message.contains(needle), "{message}")
            }
            other => panic!("expected a refusal mentioning {needle}, got {other:?}"),
        }
    }
}
