//! `secdiff generate [--prompt ...]` on a text-to-image model of the Stable Diffusion family
//! (e.g. mnist-sd): DDIM with classifier-free guidance, then the VAE decoder; in the clear, or
//! in `--mode mpc` on secret shares: this process is the client (and the model owner with
//! `--local` or `--serve-weights`), the parties run `mpc_party::serve_text_sample`.

use std::time::Instant;

use diffusion::{sdu_targets, token_rows, SampleOptions, SduTargets, TextToImage};
use net::{PartiesConfig, RoleLink, PARTIES};
use nn::sd::model_files::{is_text_to_image, ModelFiles};
use nn::{Plain, PlainTensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::cli_error::{CliError, CliResult};
use crate::generate::{step_bar, GenerateArgs, Mode, SamplerKind, SpacingArg};
use crate::mpc_client::run_text_client;
use crate::mpc_generate::{
    fidelity, print_table, run_deployment_roles, run_local_roles, seconds_sampling, summarize,
};
use crate::mpc_job::TextSampleJob;
use crate::mpc_owner::share_text_weights;
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
    let sdu = args.sdu.get();
    if let Some(sdu) = sdu {
        sdu.check()?;
        // The unconditional trajectory runs in the clear from the client's x_T: only a client
        // that holds the weights can run it.
        if matches!(args.mode, Mode::Mpc) && !args.local() && !args.mpc.serve_weights {
            return Err(CliError::Usage(
                "--sdu runs the unconditional trajectory in the clear at the client, which needs \
                 the model's weights: with --parties, the client must be the model owner \
                 (--serve-weights)"
                    .into(),
            ));
        }
    }
    // Where the parties are, in MPC mode (`Some(None)`: every role in this process).
    let parties: Option<Option<PartiesConfig>> = match args.mode {
        Mode::Plain => {
            args.mpc.check_unused()?;
            None
        }
        Mode::Mpc if args.mpc.public_weights => {
            return Err(CliError::Usage(format!(
                "{}: text models' weights are always secret-shared (no --public-weights)",
                args.model_name()
            )));
        }
        Mode::Mpc if args.local() && args.mpc.shutdown_parties => {
            return Err(CliError::Usage(
                "--shutdown-parties is for --parties deployments".into(),
            ));
        }
        Mode::Mpc => Some(args.mpc.deployment(args.local())?),
        #[cfg(feature = "he")]
        Mode::He => {
            return Err(CliError::Usage(format!(
                "{} is a text-to-image model: there is no HE driver for text models; it runs in \
                 plain mode and in --mode mpc. For HE, use --model cipherdm-mnist --labels ...",
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
    // SDU's targets (the client's plaintext work), flattened step by step.
    let targets = match sdu {
        Some(sdu) => {
            let x_t = PlainTensor::new(&[n, lc, ls, ls], noise.clone())?;
            let bar = step_bar(steps * sdu.refine);
            bar.set_prefix("sdu");
            let targets = sdu_targets(&pipe, &x_t, steps, sdu, |i, total| {
                bar.set_length(total as u64);
                bar.set_position(i as u64)
            })?;
            bar.finish_and_clear();
            Some((sdu.eta, targets))
        }
        None => None,
    };
    let plain_sample = |on_step: &dyn Fn(usize)| -> CliResult<PlainTensor> {
        let sdu = match &targets {
            Some((eta, t)) => Some(SduTargets::public(&Plain, *eta, t)?),
            None => None,
        };
        Ok(pipe.sample_with(&Plain, &prompts, &noise, opts, sdu.as_ref(), on_step)?)
    };
    let mut mpc_report = None;
    let x0: Vec<f32> = if let Some(deployment) = parties {
        let methods = args.mpc.methods(args.model_name())?;
        let job = TextSampleJob {
            model: args.model_name().to_string(),
            config: c.clone(),
            vocab: files.tokenizer.words().to_vec(),
            scaling_factor: files.scaling_factor()?,
            prompts: n,
            steps,
            guidance,
            frac_bits: args.mpc.frac_bits,
            truncation: args.mpc.trunc()?.name().to_string(),
            methods: methods.names(),
            sdu_eta: targets.as_ref().map(|(eta, _)| *eta),
        };
        let (_, rows) = token_rows(&files.tokenizer, c, &prompts)?;
        let stacked: Option<Vec<f32>> = targets
            .as_ref()
            .map(|(_, t)| t.iter().flat_map(|e| e.data().iter().copied()).collect());
        let client = |links: &[RoleLink; PARTIES]| {
            run_text_client(links, &job, &rows, &noise, stacked.as_deref(), |step, _| {
                bar.set_position(step as u64)
            })
        };
        let owner = |links: &[RoleLink; PARTIES]| {
            share_text_weights(links, &job.model, &files, job.frac_bits)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let outcome = match &deployment {
            None => run_local_roles(owner, client)?,
            Some(cfg) => run_deployment_roles(
                cfg,
                args.mpc.serve_weights.then_some(owner),
                args.mpc.shutdown_parties,
                client,
            )?,
        };
        bar.finish_and_clear();
        let mut report = summarize(&outcome, args.mpc.deployment_name(), &job.settings(), false);
        if !args.mpc.no_compare_plain {
            let started = Instant::now();
            let want = plain_sample(&|_| {})?;
            let (max, psnr) = fidelity(&outcome.x0, want.data());
            report.max_abs_diff_vs_plain = Some(max);
            report.psnr_vs_plain = Some(psnr);
            report.plain_seconds_sampling = Some(started.elapsed().as_secs_f64());
        }
        print_table(&report, seconds_sampling(&outcome), steps);
        mpc_report = Some(report);
        outcome.x0.iter().map(|v| v.clamp(-1.0, 1.0)).collect()
    } else {
        let x = plain_sample(&|_| bar.inc(1))?;
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
            "mode": if mpc_report.is_some() { "mpc" } else { "plain" },
            "mpc": mpc_report,
            "model": dir.display().to_string(),
            "prompt": prompt,
            "tokens": files.tokenizer.encode(&prompt),
            "guidance": guidance,
            "steps": steps,
            "sdu": sdu.map(|s| serde_json::json!({"eta": s.eta, "refine": s.refine})),
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
