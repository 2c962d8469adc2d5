//! The leakage audit on real sessions of cipherdm-mnist: the server's least-squares inversion of
//! the client's stem convolution recovers x_t and x_0 almost exactly, far better than what the
//! plaintext part alone gives.

use diffusion::{DdimConfig, Sampler, SeededNoise, Spacing};
use he::audit::{
    from_features, from_noise_rollout, from_plain_part, record_session, score, HeadInverter,
};
use he::model::LoadedModel;
use he::sampler::plan;
use he::Preset;

#[test]
fn stem_features_leak_x_t_and_x_0() {
    let model = LoadedModel::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/cipherdm-mnist"
    ))
    .unwrap();
    let sampler = Sampler::Ddim(DdimConfig {
        steps: 5,
        eta: 0.0,
        spacing: Spacing::Uniform,
        clip_x0: false,
    });
    let steps = plan(&sampler, &model.schedule).unwrap();
    let labels = [1usize];
    let x_t = SeededNoise::new(3).normal(784);
    let split = model.split_point("downs_0").unwrap();
    let run = record_session(&model, split, 0.01, Preset::HeDiff, &x_t, &labels, &steps).unwrap();
    assert_eq!(run.recording.steps.len(), 5);
    // The server saw two activations (the stem's output is the first skip connection).
    assert_eq!(run.recording.steps[0].features.len(), 2);
    let shape = [1, 1, 28, 28];

    let inverter = HeadInverter::new(model.clone(), &labels).unwrap();
    let stem = from_features(&run.recording, None, &mut |_, f| inverter.from_stem(f)).unwrap();
    let stem = score(&run.trajectory, &shape, &stem).unwrap();
    let plain = score(
        &run.trajectory,
        &shape,
        &from_plain_part(&run.recording).unwrap(),
    )
    .unwrap();
    let noise = score(
        &run.trajectory,
        &shape,
        &from_noise_rollout(&run.recording).unwrap(),
    )
    .unwrap();
    let last = steps.len() - 1;
    let t_last = run.recording.steps[last].t;
    let deep = from_features(&run.recording, Some(&[last]), &mut |i, f| {
        assert_eq!(i, last);
        inverter.from_deepest(split, t_last, f, 4)
    })
    .unwrap();
    let deep = score(&run.trajectory, &shape, &deep).unwrap();
    eprintln!("stem {stem:?}\nplain {plain:?}\nnoise {noise:?}\ndeep {deep:?}");
    assert!(stem.psnr_x_t > 40.0 && stem.ssim_x_t > 0.99, "{stem:?}");
    assert!(stem.psnr_x_0 > 40.0 && stem.ssim_x_0 > 0.99, "{stem:?}");
    assert!(plain.psnr_x_t < stem.psnr_x_t - 20.0, "{plain:?}");
    assert!(deep.psnr_x_0 > plain.psnr_x_0, "{deep:?} vs {plain:?}");
}
