//! mnist-sd's ten digits sampled in the clear and on secret shares (three parties in threads:
//! text encoder, guided DDIM U-Net and VAE decoder under MPC, weights, prompts and x_T secret),
//! written as one PNG: the plaintext row above the MPC row, same prompts and x_T.
//!
//!   cargo run --release -p diffusion --example mnist_sd_on_shares -- [OUT.png] [STEPS]
//!
//! Defaults: target/mnist_sd_on_shares.png, 50 steps (about two minutes on two cores).

use std::error::Error;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use diffusion::{SampleOptions, TextToImage};
use mpc::{deal, reconstruct, run_local, AShare, FixedConfig, MpcError, OutputShare, TruncMethod};
use nn::sd::model_files::ModelFiles;
use nn::{Backend, Methods, Mpc, Plain, PlainTensor};
use rand::SeedableRng;
use rand08::SeedableRng as _;
use rand_distr::{Distribution, StandardNormal};
use ring::{FixedPoint, RingTensor};

const FRAC_BITS: u32 = 18;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = args
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/mnist_sd_on_shares.png"));
    let steps: usize = match args.get(1) {
        Some(s) => s.parse().map_err(|_| format!("STEPS {s:?} is not a count"))?,
        None => 50,
    };
    let files = ModelFiles::load(&root.join("models/mnist-sd"))?;
    let c = files.config.clone();
    let prompts: Vec<String> = (0..10).map(|d| format!("a handwritten {d}")).collect();
    let n = prompts.len();
    let (lc, ls) = (c.vae.latent_channels, c.latent_size());
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let noise: Vec<f32> = (0..n * lc * ls * ls)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let opts = SampleOptions {
        steps,
        guidance: 7.5,
    };

    let started = Instant::now();
    let plain = TextToImage::new(&Plain, &files, |_, s, d| PlainTensor::new(s, d))?;
    let want = plain.sample(&Plain, &prompts, &noise, opts, |_| {})?;
    eprintln!("plaintext: {:.1} s", started.elapsed().as_secs_f64());

    // The owner deals the weights, the client its token rows and x_T.
    let fp = FixedPoint::new(FRAC_BITS);
    let mut dealer = rand08::rngs::StdRng::from_entropy();
    let shares = nn::sd::deal_model_files(&files, FRAC_BITS, &mut dealer)?;
    let mut share = |shape: &[usize], values: &[f32]| -> Result<Vec<AShare>, Box<dyn Error>> {
        let x = RingTensor::new(shape, fp.encode_f32(values)?)?;
        deal(&x, &mut dealer)
            .into_iter()
            .enumerate()
            .map(|(p, m)| m.into_share(p).map_err(Into::into))
            .collect()
    };
    let tokens = plain.tokens(&Plain, &prompts)?;
    let tokens = share(&Plain.shape(&tokens), tokens.data())?;
    let x_t = share(&[n, lc, ls, ls], &noise)?;
    let scaling = files.scaling_factor()?;
    let parts = Mutex::new(shares.map(Some));
    let inputs: Mutex<Vec<_>> = Mutex::new(tokens.into_iter().zip(x_t).map(Some).collect());

    let started = Instant::now();
    let outs = run_local(
        FixedConfig::new(FRAC_BITS, TruncMethod::Robust),
        None,
        |party| {
            let id = party.id();
            let err = |e: String| MpcError::invalid("mnist-sd on shares", e);
            let mut mine = parts.lock().unwrap()[id].take().expect("one set per party");
            let (tokens, x_t) = inputs.lock().unwrap()[id].take().expect("one per party");
            let b = Mpc::new(party, Methods::for_model("mnist-sd"));
            let pipe = TextToImage::from_sources(
                &b,
                c.clone(),
                files.tokenizer.clone(),
                scaling,
                [&mut mine.text_encoder, &mut mine.unet, &mut mine.vae],
            )
            .map_err(|e| err(e.to_string()))?;
            let x0 = pipe
                .sample_from(&b, &tokens, x_t, opts, |i| {
                    if id == 0 {
                        eprint!("\rMPC step {}/{steps}", i + 1);
                    }
                })
                .map_err(|e| err(e.to_string()))?;
            Ok((OutputShare::of(&x0), party.meter().total().bytes))
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let bytes: u64 = outs.iter().map(|o| o.1).sum();
    let parts: Vec<OutputShare> = outs.into_iter().map(|o| o.0).collect();
    let got = fp.decode_slice(reconstruct(&parts)?.data());
    let diff = got
        .iter()
        .zip(want.data())
        .map(|(g, w)| (g - *w as f64).abs())
        .fold(0.0, f64::max);
    eprintln!(
        "\rMPC: {n} images, {steps} guided steps, {seconds:.1} s, {:.2} GB between the parties; \
         max abs difference from plaintext {diff:.2e} (pixels in [-1, 1])",
        bytes as f64 / 1e9
    );

    let clip = |v: f64| v.clamp(-1.0, 1.0) as f32;
    let mut grid: Vec<f32> = want.data().iter().map(|&v| clip(v as f64)).collect();
    grid.extend(got.iter().map(|&v| clip(v)));
    nn::sd::grid::write_grid(&out, &grid, c.image_size, n)?;
    eprintln!("wrote {} (top: plaintext, bottom: MPC)", out.display());
    Ok(())
}
