//! `secdiff`: private image generation with diffusion models.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "secdiff",
    version,
    about = "Private image generation with diffusion models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

fn main() {
    let cli = Cli::parse();
    match cli.command {}
}
