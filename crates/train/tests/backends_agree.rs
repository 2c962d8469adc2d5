//! The training backend (candle) and the inference backend (`Plain`) run the same model code: a
//! text-to-image model built and saved by the trainer, loaded back from its diffusers-layout
//! files, samples the same images under both backends.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Var;
use diffusion::{SampleOptions, TextToImage};
use nn::sd::model_files::ModelFiles;
use nn::sd::weights::save_atomic;
use nn::sd::{
    AutoencoderKL, ClipTextTransformer, MnistClassifier, StableDiffusionConfig,
    UNet2DConditionModel, VaeParts,
};
use nn::{Backend, Plain, PlainTensor};
use train::backend::values;
use train::params::Params;
use train::Candle;

const MODEL: &str = include_str!("../../../models/mnist-sd/config.toml");

#[test]
fn candle_and_plain_sample_the_same_images() {
    let dir = std::env::temp_dir().join(format!("secdiff-agree-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::write(dir.join("config.toml"), MODEL).unwrap();
    std::fs::copy(
        repo.join("models/mnist-sd/vocab.txt"),
        dir.join("vocab.txt"),
    )
    .unwrap();
    let cfg = StableDiffusionConfig::from_file(&dir.join("config.toml")).unwrap();

    // Random weights from the trainer's initialiser, saved as training saves them.
    let b = Candle::default();
    let save = |params: &Params, file: &str, meta: HashMap<String, String>| {
        save_atomic(&dir.join(file), &params.snapshot().unwrap(), meta).unwrap();
    };
    let mut p = Params::new(1);
    AutoencoderKL::new(&b, &mut p, "", &cfg.vae, VaeParts::Both).unwrap();
    save(
        &p,
        "vae.safetensors",
        HashMap::from([("scaling_factor".into(), "1.7".into())]),
    );
    let mut p = Params::new(2);
    UNet2DConditionModel::new(&b, &mut p, "", &cfg.unet).unwrap();
    save(&p, "unet.safetensors", HashMap::new());
    let mut p = Params::new(3);
    ClipTextTransformer::new(&b, &mut p, "text_model", &cfg.text_encoder).unwrap();
    save(&p, "text_encoder.safetensors", HashMap::new());
    let mut p = Params::new(4);
    let classifier_cfg = cfg.classifier.clone().unwrap();
    MnistClassifier::new(&b, &mut p, &classifier_cfg).unwrap();
    save(&p, "classifier.safetensors", HashMap::new());

    let files = ModelFiles::load(&dir).unwrap();
    assert_eq!(files.scaling_factor().unwrap(), 1.7);
    let on_candle = TextToImage::new(&b, &files, |b: &Candle, shape: &[usize], data: Vec<f32>| {
        Var::from_slice(&data, shape, &b.device).map_err(train::backend::ce)
    })
    .unwrap();
    let on_plain = TextToImage::new(&Plain, &files, |_: &Plain, shape: &[usize], data| {
        PlainTensor::new(shape, data)
    })
    .unwrap();
    let prompts: Vec<String> = ["seven", "a handwritten 3", "", "the number zero"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let noise: Vec<f32> = (0..4 * 4 * 7 * 7)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let opts = SampleOptions {
        steps: 4,
        guidance: 3.0,
    };
    let a = values(
        &on_candle
            .sample(&b, &prompts, &noise, opts, |_| {})
            .unwrap(),
    )
    .unwrap();
    let p = on_plain
        .sample(&Plain, &prompts, &noise, opts, |_| {})
        .unwrap();
    assert_eq!(Plain.shape(&p), vec![4, 1, 28, 28]);
    let diff = a
        .iter()
        .zip(p.data())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = a.iter().map(|x| x.abs()).fold(0f32, f32::max);
    assert!(
        diff < 1e-3 * scale.max(1.0),
        "max |candle - plain| = {diff} (scale {scale})"
    );

    // The classifier too.
    let weights = nn::sd::weights::WeightsFile::load(&dir.join("classifier.safetensors")).unwrap();
    let net = MnistClassifier::new(
        &Plain,
        &mut weights.source(|_: &Plain, s: &[usize], d| PlainTensor::new(s, d)),
        &classifier_cfg,
    )
    .unwrap();
    let x = PlainTensor::new(&[4, 1, 28, 28], p.data().to_vec()).unwrap();
    let plain_logits = net.forward(&Plain, &x).unwrap();
    let net_c = MnistClassifier::new(
        &b,
        &mut weights.source(|b: &Candle, s: &[usize], d: Vec<f32>| {
            Var::from_slice(&d, s, &b.device).map_err(train::backend::ce)
        }),
        &classifier_cfg,
    )
    .unwrap();
    let xc = b.tensor(&[4, 1, 28, 28], p.data()).unwrap();
    let candle_logits = values(&net_c.forward(&b, &xc).unwrap()).unwrap();
    let diff = candle_logits
        .iter()
        .zip(plain_logits.data())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-3, "classifier logits differ by {diff}");
    std::fs::remove_dir_all(&dir).unwrap();
}
