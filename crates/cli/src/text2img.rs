//! `secdiff generate [--prompt ...]` on a text-to-image model of the Stable Diffusion family
//! (e.g. mnist-sd): DDIM with classifier-free guidance, then the VAE decoder; in the clear, or
//! with `--mode mpc --local` on secret shares (`diffusion::sample_on_shares_local`).

use std::time::Instant;

use diffusion::{sample_on_shares_local, SampleOptions, ShareSettings, TextToImage};
use nn::sd::model_files::{is_text_to_image, ModelFiles};
use nn::{Plain, PlainTensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::cli_error::{CliError, CliResult};
use crate::generate::{step_bar, GenerateArgs, Mode, SamplerKind, SpacingArg};
use crate::output;

/// Whether `--model` names a text-to-image model (which `generate` then runs here even without
/// --prompt).
pub fn is_text_model(model: &str) -> bool {
    crate::eval::resolve_model_dir(model).is_ok_and(|dir| is_text_to_image(&dir))
}

pub fn run(args: &GenerateArgs) -> CliResult<()> {
    let started = Instant::now();
    let prompt = args.prompt.clone().unwrap_or_default();
    if args.sampler != SamplerKind::Ddim
        || args.eta != 0.0
        || args.labels.is_some()
        || args.noise.is_some()
        || args.spacing != SpacingArg::Uniform
        || args.no_clip
    {
        return Err(CliError::Usage(format!(
            "{} is a text-to-image model (--prompt): it samples with Stable Diffusion's \
             deterministic DDIM from --seed and takes no --labels, --noise, --sampler ddpm, \
             --eta, --spacing or --no-clip (for those, use --model cipherdm-mnist)",
            args.model_name()
        )));
    }
    let private = match args.mode {
        Mode::Plain => {
            args.mpc.check_unused()?;
            false
        }
        Mode::Mpc if args.local() => {
            if args.mpc.public_weights || args.mpc.serve_weights || args.mpc.shutdown_parties {
                return Err(CliError::Usage(format!(
                    "{}: --public-weights, --serve-weights and --shutdown-parties are for \
                     deployments, and text models run in MPC only with --local so far",
                    args.model_name()
                )));
            }
            true
        }
        _ => {
            return Err(CliError::Usage(format!(
                "{} is a text-to-image model: it runs in plain mode and in --mode mpc --local \
                 (three parties in this process) so far; there is no HE driver and no MPC \
                 deployment (--parties) driver for text models yet. For those, use --model \
                 cipherdm-mnist --labels ...",
                args.model_name()
            )));
        }
    };
    if !args.guidance.is_finite() {
        return Err(CliError::Usage(format!(
            "--guidance {} is not a number",
            args.guidance
        )));
    }
    let n = args.batch.unwrap_or(1);
    if n == 0 {
        return Err(CliError::Usage("--batch must be positive".into()));
    }
    for (flag, path) in [("--out", &args.out), ("--raw-out", &args.raw_out)] {
        if let Some(p) = path {
            output::check_writable(flag, p)?;
        }
    }
    let dir = crate::eval::resolve_model_dir(args.model_name()).map_err(CliError::Usage)?;
    let files = ModelFiles::load(&dir)?;
    let pipe = TextToImage::new(&Plain, &files, |_, shape, data| {
        PlainTensor::new(shape, data)
    })?;
    let c = &files.config;
    let (lc, ls) = (c.vae.latent_channels, c.latent_size());
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let noise: Vec<f32> = (0..n * lc * ls * ls)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let steps = args.steps.unwrap_or(50);
    let bar = step_bar(steps);
    let prompts = vec![prompt.clone(); n];
    // The empty prompt is the unconditional branch itself: guiding it would change nothing.
    let guidance = if prompt.is_empty() {
        1.0
    } else {
        args.guidance
    };
    let opts = SampleOptions { steps, guidance };
    let mut mpc_report = None;
    let x0: Vec<f32> = if private {
        let settings = ShareSettings {
            methods: args.mpc.methods(args.model_name())?,
            trunc: args.mpc.trunc()?,
            frac_bits: args.mpc.frac_bits,
            seed: None,
        };
        let run = sample_on_shares_local(&files, &prompts, &noise, opts, settings, |_| bar.inc(1))?;
        bar.finish_and_clear();
        let got: Vec<f32> = run.images.iter().map(|&v| v as f32).collect();
        let fidelity = if args.mpc.no_compare_plain {
            None
        } else {
            let want = pipe.sample(&Plain, &prompts, &noise, opts, |_| {})?;
            Some(crate::mpc_generate::fidelity(&got, want.data()))
        };
        eprintln!(
            "mpc: {steps} steps on shares in {:.1} s, {:.1} MB between the parties{}",
            run.seconds,
            run.bytes as f64 / 1e6,
            match fidelity {
                Some((max, psnr)) => format!(
                    "; vs plaintext from the same noise: max abs diff {max:.2e}, PSNR {psnr:.1} dB"
                ),
                None => String::new(),
            }
        );
        mpc_report = Some(serde_json::json!({
            "deployment": "local",
            "weights": "secret-shared",
            "frac_bits": settings.frac_bits,
            "truncation": args.mpc.truncation,
            "methods": settings.methods.names(),
            "seconds_sampling": run.seconds,
            "bytes_between_parties": run.bytes,
            "rounds": run.rounds,
            "max_abs_diff_vs_plain": fidelity.map(|f| f.0),
            "psnr_vs_plain": fidelity.map(|f| f.1),
        }));
        got.iter().map(|v| v.clamp(-1.0, 1.0)).collect()
    } else {
        let x = pipe.sample(&Plain, &prompts, &noise, opts, |_| bar.inc(1))?;
        bar.finish_and_clear();
        x.data().iter().map(|v| v.clamp(-1.0, 1.0)).collect()
    };
    let shape = [n, c.vae.out_channels, c.image_size, c.image_size];
    if let Some(path) = &args.raw_out {
        output::write_file(
            path,
            &nn::weights::f32_tensors_to_bytes(&[("x_0", &shape, &x0)])?,
        )?;
    }
    if let Some(path) = &args.out {
        output::write_file(path, &output::grid_png(&shape, &x0)?)?;
    }
    if let Some(path) = &args.report {
        let report = serde_json::json!({
            "mode": if private { "mpc" } else { "plain" },
            "mpc": mpc_report,
            "model": dir.display().to_string(),
            "prompt": prompt,
            "tokens": files.tokenizer.encode(&prompt),
            "guidance": guidance,
            "steps": steps,
            "images": n,
            "seed": args.seed,
            "seconds": started.elapsed().as_secs_f64(),
        });
        output::write_file(
            path,
            serde_json::to_string_pretty(&report)
                .map_err(|e| CliError::Other(e.to_string()))?
                .as_bytes(),
        )?;
    }
    eprintln!(
        "generated {n} image(s) of \"{prompt}\" in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
