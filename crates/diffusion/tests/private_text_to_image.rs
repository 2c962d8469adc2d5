//! PIDM's setting on the shipped mnist-sd: the text encoder, every guided DDIM step of the U-Net
//! and the VAE decoder run on secret shares (three parties in threads on the `Mpc` backend; the
//! weights, the prompt's token rows and x_T are dealt as shares; only the image is opened),
//! checked against the plaintext pipeline and the `Approx` twin on the same inputs.
//!
//! The dealer here plays the model owner and the client of a deployment (the parties never see
//! plaintext weights or inputs); the CLI has no driver for text models in MPC yet.

use std::path::PathBuf;
use std::time::Instant;

use diffusion::{SampleOptions, TextToImage};
use mpc::{deal, reconstruct, run_local, AShare, FixedConfig, MpcError, OutputShare, TruncMethod};
use nn::sd::model_files::ModelFiles;
use nn::{Approx, Backend, Methods, Mpc, Plain, PlainTensor};
use rand08::SeedableRng;
use ring::{FixedPoint, RingTensor};

const FRAC_BITS: u32 = 18;

fn files() -> ModelFiles {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/mnist-sd");
    ModelFiles::load(&dir).unwrap()
}

/// Shares of `values` (shape `shape`) for the three parties.
fn share(shape: &[usize], values: &[f32], seed: u64) -> [AShare; 3] {
    let x = RingTensor::new(
        shape,
        FixedPoint::new(FRAC_BITS).encode_f32(values).unwrap(),
    )
    .unwrap();
    let mut rng = rand08::rngs::StdRng::seed_from_u64(seed);
    deal(&x, &mut rng).map(|m| {
        let p = m.party;
        m.into_share(p).unwrap()
    })
}

fn open(outs: &[AShare]) -> Vec<f64> {
    let parts: Vec<OutputShare> = outs.iter().map(OutputShare::of).collect();
    FixedPoint::new(FRAC_BITS).decode_slice(reconstruct(&parts).unwrap().data())
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn mnist_sd_samples_on_shares_close_to_plaintext() {
    let files = files();
    let c = files.config.clone();
    let prompts = vec!["a handwritten 3".to_string(), "seven".to_string()];
    let n = prompts.len();
    let (lc, ls) = (c.vae.latent_channels, c.latent_size());
    let mut rng = rand08::rngs::StdRng::seed_from_u64(11);
    let noise: Vec<f32> = (0..n * lc * ls * ls)
        .map(|_| {
            // Box-Muller: standard normal x_T from the test's own generator.
            let (u, v): (f64, f64) = (rand08::Rng::gen(&mut rng), rand08::Rng::gen(&mut rng));
            ((-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect();
    // Few steps keep the test short; guidance 7.5 as the model is sampled by default, which
    // amplifies any difference between the two branches' errors.
    let opts = SampleOptions {
        steps: 3,
        guidance: 7.5,
    };

    let plain = TextToImage::new(&Plain, &files, |_, s, d| PlainTensor::new(s, d)).unwrap();
    let want = plain
        .sample(&Plain, &prompts, &noise, opts, |_| {})
        .unwrap();
    let methods = Methods::for_model("mnist-sd");
    let approx = Approx::new(methods, FRAC_BITS);
    let twin = TextToImage::new(&approx, &files, |a, s, d| a.public(s, &d)).unwrap();
    let twin = twin
        .sample(&approx, &prompts, &noise, opts, |_| {})
        .unwrap();
    let want: Vec<f64> = want.data().iter().map(|&v| v as f64).collect();

    // The owner's weights and the client's inputs, as shares.
    let mut dealer = rand08::rngs::StdRng::seed_from_u64(1000);
    let shares = nn::sd::deal_model_files(&files, FRAC_BITS, &mut dealer).unwrap();
    let tokens = plain.tokens(&Plain, &prompts).unwrap();
    let tokens = share(&Plain.shape(&tokens), tokens.data(), 1);
    let x_t = share(&[n, lc, ls, ls], &noise, 2);
    let scaling = files.scaling_factor().unwrap();
    let shares = std::sync::Mutex::new(shares.map(Some));

    let started = Instant::now();
    let outs = run_local(
        FixedConfig::new(FRAC_BITS, TruncMethod::Robust),
        Some(5),
        |party| {
            let id = party.id();
            let mut mine = shares.lock().unwrap()[id].take().unwrap();
            let err = |e: String| MpcError::invalid("mnist-sd on shares", e);
            let b = Mpc::new(party, methods);
            let pipe = TextToImage::from_sources(
                &b,
                c.clone(),
                files.tokenizer.clone(),
                scaling,
                [&mut mine.text_encoder, &mut mine.unet, &mut mine.vae],
            )
            .map_err(|e| err(e.to_string()))?;
            for (what, src) in [
                ("text encoder", &mine.text_encoder),
                ("unet", &mine.unet),
                ("vae", &mine.vae),
            ] {
                assert!(src.unused().is_empty(), "{what}: unused shares");
            }
            let before = party.meter().total();
            let x0 = pipe
                .sample_from(&b, &tokens[id], x_t[id].clone(), opts, |_| {})
                .map_err(|e| err(e.to_string()))?;
            let after = party.meter().total();
            Ok((x0, after.bytes - before.bytes))
        },
    )
    .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let bytes: u64 = outs.iter().map(|o| o.1).sum();
    let got = open(&outs.iter().map(|o| o.0.clone()).collect::<Vec<_>>());

    let vs_plain = max_abs_diff(&got, &want);
    let vs_twin = max_abs_diff(&got, twin.data());
    let twin_vs_plain = max_abs_diff(twin.data(), &want);
    eprintln!(
        "mnist-sd on shares, {n} images, {} guided steps: {seconds:.1} s, {:.1} MB; max abs \
         diff vs plaintext {vs_plain:.2e}, vs the Approx twin {vs_twin:.2e} (twin vs plaintext \
         {twin_vs_plain:.2e})",
        opts.steps,
        bytes as f64 / 1e6
    );
    assert_eq!(
        got.len(),
        n * c.vae.out_channels * c.image_size * c.image_size
    );
    // Measured: 1.9e-2 from plaintext (the approximations' error, as the twin shows: 1.9e-2),
    // 2.2e-3 from the twin (the truncations' random ulps, amplified by the guidance).
    assert!(
        vs_plain < 0.05,
        "secure image off by {vs_plain} from plaintext"
    );
    assert!(
        vs_twin < 1e-2,
        "secure image off by {vs_twin} from its twin"
    );
}

#[test]
fn shares_of_the_wrong_model_part_are_refused_by_name() {
    let files = files();
    let c = files.config.clone();
    let mut dealer = rand08::rngs::StdRng::seed_from_u64(7);
    let shares = nn::sd::deal_model_files(&files, FRAC_BITS, &mut dealer).unwrap();
    let shares = std::sync::Mutex::new(shares.map(Some));
    let outs = run_local(
        FixedConfig::new(FRAC_BITS, TruncMethod::Robust),
        Some(5),
        |party| {
            let mut mine = shares.lock().unwrap()[party.id()].take().unwrap();
            let b = Mpc::new(party, Methods::for_model("mnist-sd"));
            // The VAE's shares where the U-Net's belong.
            let built = TextToImage::from_sources(
                &b,
                c.clone(),
                files.tokenizer.clone(),
                1.0,
                [&mut mine.text_encoder, &mut mine.vae, &mut mine.unet],
            );
            Ok(built.err().map(|e| e.to_string()))
        },
    )
    .unwrap();
    for e in outs {
        let e = e.expect("a U-Net built from the VAE's shares");
        assert!(
            e.contains("parameter") && e.contains("conv_in"),
            "unclear error: {e}"
        );
    }
}
