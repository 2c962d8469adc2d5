//! Helpers for the MPC backend tests: a trusted dealer in the test process (standing in for the
//! model owner and the client, which share over the network in a real run) and the reference
//! vectors.

#![allow(dead_code)]

use std::path::PathBuf;

use mpc::{deal, reconstruct, AShare, OutputShare};
use nn::mpc::SharedParams;
use nn::unet::UNetConfig;
use nn::weights::{FlaxParams, Recording, TensorFile};
use nn::{Backend, MpcParam, Plain, PlainTensor};
use rand::SeedableRng;
use ring::{FixedPoint, RingTensor};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn config() -> UNetConfig {
    #[derive(serde::Deserialize)]
    struct File {
        unet: UNetConfig,
    }
    let text = std::fs::read_to_string(repo().join("models/cipherdm-mnist/config.toml")).unwrap();
    toml::from_str::<File>(&text).unwrap().unet
}

pub fn weights() -> PathBuf {
    repo().join("models/cipherdm-mnist/weights.safetensors")
}

pub fn cases() -> TensorFile {
    TensorFile::open(repo().join("tests/data/cipherdm-mnist/cases.safetensors")).unwrap()
}

/// A reference tensor in NHWC, returned as NCHW.
pub fn nchw(cases: &TensorFile, name: &str) -> PlainTensor {
    let (shape, data) = cases.f32(name).unwrap();
    let x = PlainTensor::new(&shape, data).unwrap();
    Plain.permute(&x, &[0, 3, 1, 2]).unwrap()
}

pub fn ints(cases: &TensorFile, name: &str) -> Vec<usize> {
    cases
        .i64(name)
        .unwrap()
        .1
        .iter()
        .map(|&v| v as usize)
        .collect()
}

/// The three parties' shares of `values` (fixed point, f = 18).
pub fn share(shape: &[usize], values: &[f32], seed: u64) -> [AShare; 3] {
    let fp = FixedPoint::new(18);
    let x = RingTensor::new(shape, fp.encode_f32(values).unwrap()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    deal(&x, &mut rng).map(|m| {
        let p = m.party;
        m.into_share(p).unwrap()
    })
}

/// Every parameter of the model, shared by a dealer: (name, shares per party).
pub fn shared_weights() -> Vec<(String, [AShare; 3])> {
    let mut src = Recording::new(FlaxParams::open(weights()).unwrap());
    nn::unet::UNet::load(&Plain, &config(), &mut src).unwrap();
    let (mut flax, records) = src.into_parts();
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let v = flax.values(&r.name, &r.shape).unwrap();
            (r.name.clone(), share(&r.shape, &v, 1000 + i as u64))
        })
        .collect()
}

/// Party `id`'s parameter source.
pub fn party_params(all: &[(String, [AShare; 3])], id: usize) -> SharedParams {
    let mut p = SharedParams::new();
    for (name, shares) in all {
        p.insert(name, MpcParam::Secret(shares[id].clone()))
            .unwrap();
    }
    p
}

/// Opens the parties' output shares.
pub fn open(outs: &[AShare]) -> Vec<f64> {
    let parts: Vec<OutputShare> = outs.iter().map(OutputShare::of).collect();
    FixedPoint::new(18).decode_slice(reconstruct(&parts).unwrap().data())
}

pub fn max_abs_diff(a: &[f64], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - *y as f64).abs())
        .fold(0.0, f64::max)
}
