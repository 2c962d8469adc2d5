//! DDIM-50 and DDPM-1000 on the shipped cipherdm-mnist model against CipherDM's own samples
//! (tests/data/cipherdm-mnist/cases.safetensors: the same x_T, labels and DDPM noise).

use std::path::PathBuf;

use diffusion::{DdimConfig, ModelDir, Sampler, SeededNoise, TensorNoise};
use nn::unet::one_hot;
use nn::weights::TensorFile;
use nn::{Backend, Plain, PlainTensor};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cases() -> TensorFile {
    TensorFile::open(repo().join("tests/data/cipherdm-mnist/cases.safetensors")).unwrap()
}

/// An (N, H, W, C) reference tensor as (N, C, H, W); a leading step axis is kept in front.
fn channels_first(cases: &TensorFile, name: &str) -> PlainTensor {
    let (shape, data) = cases.f32(name).unwrap();
    let x = PlainTensor::new(&shape, data).unwrap();
    let r = shape.len();
    let mut perm: Vec<usize> = (0..r - 3).collect();
    perm.extend([r - 1, r - 3, r - 2]);
    Plain.permute(&x, &perm).unwrap()
}

fn labels(cases: &TensorFile, name: &str) -> PlainTensor {
    let y: Vec<usize> = cases
        .i64(name)
        .unwrap()
        .1
        .iter()
        .map(|&v| v as usize)
        .collect();
    Plain
        .public(&[y.len(), 2], &one_hot(&y, 2).unwrap())
        .unwrap()
}

fn sample(
    sampler: &Sampler,
    x_t: PlainTensor,
    y: PlainTensor,
    noise: &mut dyn diffusion::NoiseSource<Plain>,
) -> PlainTensor {
    let model = ModelDir::open(repo().join("models/cipherdm-mnist")).unwrap();
    let unet = model.load_plain_unet().unwrap();
    let schedule = model.schedule().unwrap();
    let n = x_t.shape()[0];
    let mut steps = 0;
    let out = sampler
        .sample(
            &Plain,
            &schedule,
            x_t,
            |x, t| unet.forward(&Plain, x, &vec![t; n], Some(&y)),
            noise,
            |info| steps = info.done,
        )
        .unwrap();
    assert_eq!(steps, sampler.timesteps(&schedule).unwrap().len());
    out
}

#[test]
fn ddim50_matches_cipherdm_within_1e_3() {
    let cases = cases();
    let sampler = Sampler::Ddim(DdimConfig::default());
    let out = sample(
        &sampler,
        channels_first(&cases, "ddim50.x_T"),
        labels(&cases, "ddim50.y"),
        &mut SeededNoise::new(0),
    );
    let err = out
        .max_abs_diff(&channels_first(&cases, "ddim50.x_0"))
        .unwrap();
    eprintln!("ddim50.x_0 max abs error {err:e}");
    assert!(err < 1e-3, "max abs error {err}");
}

#[test]
fn ddpm1000_matches_cipherdm_within_1e_2() {
    let cases = cases();
    let noise = channels_first(&cases, "ddpm.noise");
    let shape = noise.shape().to_vec();
    let mut noise = TensorNoise::new(&shape, noise.into_vec()).unwrap();
    let out = sample(
        &Sampler::Ddpm,
        channels_first(&cases, "ddpm.x_T"),
        labels(&cases, "ddpm.y"),
        &mut noise,
    );
    let err = out
        .max_abs_diff(&channels_first(&cases, "ddpm.x_0"))
        .unwrap();
    eprintln!("ddpm.x_0 max abs error {err:e}");
    assert!(err < 1e-2, "max abs error {err}");
}
