//! PIDM's score distillation from unconditional generation on the shipped mnist-sd, in the
//! clear: properties that pin the targets and the correction down end to end.

use std::path::PathBuf;

use diffusion::{sdu_targets, SampleOptions, Sdu, SduTargets, TextToImage};
use nn::sd::model_files::ModelFiles;
use nn::{Plain, PlainTensor};

fn pipeline() -> TextToImage<Plain> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/mnist-sd");
    let files = ModelFiles::load(&dir).unwrap();
    TextToImage::new(&Plain, &files, |_, s, d| PlainTensor::new(s, d)).unwrap()
}

fn x_t(pipe: &TextToImage<Plain>, n: usize, seed: u32) -> PlainTensor {
    let c = &pipe.config;
    let (lc, ls) = (c.vae.latent_channels, c.latent_size());
    // A deterministic spread of values in (-2, 2), different per element and seed.
    let data = (0..n * lc * ls * ls)
        .map(|i| ((i as f32 * 0.7548 + seed as f32 * 0.5698).fract() - 0.5) * 4.0)
        .collect();
    PlainTensor::new(&[n, lc, ls, ls], data).unwrap()
}

fn sample(
    pipe: &TextToImage<Plain>,
    prompts: &[String],
    x_t: &PlainTensor,
    opts: SampleOptions,
    sdu: Option<&SduTargets<Plain>>,
) -> PlainTensor {
    pipe.sample_with(&Plain, prompts, x_t.data(), opts, sdu, |_| {})
        .unwrap()
}

/// Unguided sampling of the empty prompt *is* the unconditional trajectory: with one
/// unconditional step per conditional step, every target is exactly the step's own prediction,
/// so even a strong pull leaves the image unchanged; more unconditional steps change it.
#[test]
fn targets_of_the_same_trajectory_change_nothing() {
    let pipe = pipeline();
    let prompts = vec![String::new(); 2];
    let x_t = x_t(&pipe, 2, 1);
    let opts = SampleOptions {
        steps: 4,
        guidance: 1.0,
    };
    let plain = sample(&pipe, &prompts, &x_t, opts, None);
    let same = Sdu {
        eta: 0.5,
        refine: 1,
    };
    let targets = sdu_targets(&pipe, &x_t, 4, same, |_, _| {}).unwrap();
    assert_eq!(targets.len(), 4);
    let targets = SduTargets::public(&Plain, same.eta, &targets).unwrap();
    let distilled = sample(&pipe, &prompts, &x_t, opts, Some(&targets));
    let diff = distilled.max_abs_diff(&plain).unwrap();
    assert!(diff < 1e-3, "{diff}");

    let finer = Sdu {
        eta: 0.5,
        refine: 5,
    };
    let targets = sdu_targets(&pipe, &x_t, 4, finer, |_, _| {}).unwrap();
    let targets = SduTargets::public(&Plain, finer.eta, &targets).unwrap();
    let moved = sample(&pipe, &prompts, &x_t, opts, Some(&targets));
    assert!(moved.max_abs_diff(&plain).unwrap() > 1e-2);
}

/// With a guided prompt, a zero learning rate is plain sampling, and the paper's rate moves the
/// image by a bounded amount (the correction is a small fraction of each prediction).
#[test]
fn the_learning_rate_scales_the_correction() {
    let pipe = pipeline();
    let prompts = vec!["a handwritten 4".to_string()];
    let x_t = x_t(&pipe, 1, 2);
    let opts = SampleOptions {
        steps: 5,
        guidance: 7.5,
    };
    let plain = sample(&pipe, &prompts, &x_t, opts, None);
    let targets = sdu_targets(&pipe, &x_t, 5, Sdu::default(), |_, _| {}).unwrap();
    let at = |eta: f32| {
        let t = SduTargets::public(&Plain, eta, &targets).unwrap();
        sample(&pipe, &prompts, &x_t, opts, Some(&t))
            .max_abs_diff(&plain)
            .unwrap()
    };
    assert!(at(0.0) < 1e-6);
    let (small, paper, big) = (at(0.005), at(0.02), at(0.08));
    assert!(
        0.0 < small && small < paper && paper < big,
        "{small} {paper} {big}"
    );
    assert!(paper < 1.0, "{paper}");
}

#[test]
fn wrong_targets_are_errors() {
    let pipe = pipeline();
    let prompts = vec!["seven".to_string()];
    let x_t = x_t(&pipe, 1, 3);
    let opts = SampleOptions {
        steps: 3,
        guidance: 7.5,
    };
    let targets = sdu_targets(&pipe, &x_t, 2, Sdu::default(), |_, _| {}).unwrap();
    let targets = SduTargets::public(&Plain, 0.02, &targets).unwrap();
    let tokens = pipe.tokens(&Plain, &prompts).unwrap();
    let err = pipe
        .sample_from(&Plain, &tokens, x_t.clone(), opts, Some(&targets), |_| {})
        .unwrap_err();
    assert!(
        err.to_string().contains("2 SDU targets for 3 steps"),
        "{err}"
    );
    let bad = Sdu {
        eta: f32::NAN,
        refine: 5,
    };
    assert!(sdu_targets(&pipe, &x_t, 3, bad, |_, _| {}).is_err());
    let none = Sdu {
        eta: 0.02,
        refine: 0,
    };
    assert!(sdu_targets(&pipe, &x_t, 3, none, |_, _| {}).is_err());
}
