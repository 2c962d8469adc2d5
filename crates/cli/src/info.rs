//! `secdiff info --model M`: the architecture, schedule and parameter count of a model.

use clap::Args;
use nn::unet::UNet;
use nn::weights::Recording;
use nn::Plain;

use crate::cli_error::CliResult;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// A model name under models/ (or $SECDIFF_MODELS), or a model directory.
    #[arg(long, default_value = "cipherdm-mnist")]
    pub model: String,
    /// Also list every parameter with its shape (internal layout).
    #[arg(long)]
    pub params: bool,
}

pub fn run(args: InfoArgs) -> CliResult<()> {
    let model = diffusion::resolve_model(&args.model)?;
    let mut source = Recording::new(model.flax_params()?);
    let unet = UNet::load(&Plain, &model.config.unet, &mut source)?;
    let (flax, records) = source.into_parts();
    let count: usize = records.iter().map(|r| r.numel()).sum();
    let [c, h, w] = model.image_shape();
    let schedule = match &model.config.schedule {
        diffusion::BetaSchedule::Linear {
            timesteps,
            beta_start,
            beta_end,
        } => format!("linear betas {beta_start}..{beta_end}, {timesteps} timesteps"),
        diffusion::BetaSchedule::Cosine { timesteps, s } => {
            format!("cosine (s = {s}), {timesteps} timesteps")
        }
    };
    println!("model: {} ({})", model.name, model.dir.display());
    println!(
        "weights: {} ({:?} layout)",
        model.weights_path().display(),
        model.config.model.layout
    );
    println!("images: {c} x {h} x {w}");
    println!("schedule: {schedule}");
    println!("{}", unet.describe());
    println!("parameters: {count} in {} tensors", records.len());
    let unused = flax.unused();
    if !unused.is_empty() {
        println!(
            "warning: {} tensor(s) in the weights file are not used by this config",
            unused.len()
        );
    }
    if args.params {
        for r in &records {
            println!("  {:<45} {:?}", r.name, r.shape);
        }
    }
    Ok(())
}
