//! `secdiff train autoencoder|unet|classifier`: trains one part of a text-to-image model (or its
//! scoring classifier) through the shared model code. Only built with the `train` feature.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Part {
    /// The VAE (first: the U-Net trains on its latents).
    Autoencoder,
    /// The U-Net and the text encoder, on the frozen VAE's latents.
    Unet,
    /// The MNIST classifier used by `secdiff eval`.
    Classifier,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    pub part: Part,
    /// The training config (e.g. models/mnist-sd/train.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// The model directory to write weights, loss logs, checkpoints and sample grids into.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the part's last checkpoint in `<out>/checkpoints/`.
    #[arg(long)]
    pub resume: bool,
}

#[cfg(feature = "train")]
pub fn run(args: TrainArgs) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = train::TrainConfig::from_file(&args.config)?;
    std::fs::create_dir_all(&args.out).map_err(|e| nn::Error::File {
        path: args.out.display().to_string(),
        detail: e.to_string(),
    })?;
    let report = match args.part {
        Part::Autoencoder => train::autoencoder::train(&cfg, &args.out, args.resume)?,
        Part::Unet => train::unet::train(&cfg, &args.out, args.resume)?,
        Part::Classifier => train::classifier::train(&cfg, &args.out, args.resume)?.0,
    };
    println!(
        "{:?}: {} steps, loss {:.4} (first 100 steps) -> {:.4} (last 100), {:.0} s wall, {} CPU",
        args.part,
        report.steps,
        report.first_loss,
        report.final_loss,
        report.wall_seconds,
        report
            .cpu_seconds
            .map(|c| format!("{c:.0} s"))
            .unwrap_or_else(|| "unknown".into())
    );
    Ok(())
}

#[cfg(not(feature = "train"))]
pub fn run(_args: TrainArgs) -> Result<(), Box<dyn std::error::Error>> {
    Err("this secdiff was built without training; rebuild with \
         `cargo build --release -p cli --features train`"
        .into())
}
