//! `secdiff`: private image generation with diffusion models.

use clap::{Parser, Subcommand};

#[cfg(feature = "he")]
mod he_bench;
#[cfg(feature = "he")]
mod he_util;
mod keygen;

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
enum Command {
    /// Benchmarks that print ratios measured side by side.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
    /// Create a CA and TLS certificates for the parties, the client and the model owner.
    Keygen(keygen::KeygenArgs),
}

#[derive(Subcommand)]
enum BenchTarget {
    /// One HE-Diffusion denoising step: every element encrypted vs packed vs sparse (GPL build).
    #[cfg(feature = "he")]
    He(he_bench::BenchHeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Bench { target } => match target {
            #[cfg(feature = "he")]
            BenchTarget::He(args) => he_bench::run(args),
        },
        Command::Keygen(args) => keygen::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
