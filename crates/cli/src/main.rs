//! `secdiff`: private image generation with diffusion models.

use clap::{Parser, Subcommand};

/// An MPC party frees and reallocates tensors of megabytes in every protocol call, and on this
/// kind of VM a freshly mapped page costs ~2 us to fault in. mimalloc keeps freed memory for
/// reuse, and with purging off (see [`keep_freed_memory`]) it never hands it back to the OS:
/// measured in three processes, SiLU and rsqrt of 1M values take 25% less CPU than with glibc's
/// allocator, and page faults drop from ~190k to ~2k per run.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns off mimalloc's purging of freed memory (by default it returns memory idle for 10 ms to
/// the OS, which costs a page fault per 4 KiB, or a 2 MiB zeroing per huge page, on reuse).
fn keep_freed_memory() {
    // `mi_option_purge_delay` in mimalloc.h (position 15 of `mi_option_e` in v2 and v3; the
    // sys crate exports no constant for it); -1 means never purge.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: setting an option is thread-safe and valid at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

mod bench_accuracy;
mod bench_ops;
mod bench_plain;
mod cli_error;
mod eval;
mod fid;
mod generate;
#[cfg(feature = "he")]
mod he_audit;
#[cfg(feature = "he")]
mod he_bench;
#[cfg(feature = "he")]
mod he_generate;
#[cfg(feature = "he")]
mod he_server;
#[cfg(feature = "he")]
mod he_util;
mod info;
mod keygen;
mod mpc_bench;
mod mpc_client;
mod mpc_generate;
mod mpc_job;
mod mpc_owner;
mod mpc_party;
mod output;
mod party;
mod report;
mod text2img;
mod train;

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
    /// Leakage audits: what the servers can reconstruct from what they receive.
    Audit {
        #[command(subcommand)]
        target: AuditTarget,
    },
    /// Benchmarks that print ratios measured side by side.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
    /// Generate images (a PNG grid, raw x_0, a JSON report).
    Generate(generate::GenerateArgs),
    /// Serve HE-mode clients: run the U-Net after the split point, update encrypted latents (GPL build).
    #[cfg(feature = "he")]
    HeServer(he_server::HeServerArgs),
    /// Print a model's architecture, schedule and parameter count.
    Info(info::InfoArgs),
    /// Create a CA and TLS certificates for the parties, the client and the model owner.
    Keygen(keygen::KeygenArgs),
    /// Run one computing party (MPC mode) as its own process, serving jobs from a driver.
    Party(party::PartyArgs),
    /// Train a part of a model (needs the `train` feature).
    Train(train::TrainArgs),
    /// Score a text-to-digit model: classifier accuracy and FID on generated digits.
    Eval(eval::EvalArgs),
    /// The model owner (MPC mode): share a model's weights with the three parties.
    Owner(mpc_owner::OwnerArgs),
}

#[derive(Subcommand)]
enum AuditTarget {
    /// HE mode: reconstruct x_t and x_0 from the split features, the plaintext part and the
    /// predicted noise; PSNR/SSIM per split point and threshold (GPL build).
    #[cfg(feature = "he")]
    He(he_audit::AuditHeArgs),
}

#[derive(Subcommand)]
enum BenchTarget {
    /// One plaintext U-Net forward and one DDIM-50 sample (optionally against JAX).
    Plain(bench_plain::BenchPlainArgs),
    /// MPC protocols (mul, matmul, less, ...) with three parties: time, bytes, rounds, error.
    Ops(bench_ops::BenchOpsArgs),
    /// Secure nonlinear functions per method: max abs / rel error, MSE, bytes, rounds.
    Accuracy(bench_accuracy::BenchAccuracyArgs),
    /// Private sampling (CipherDM Tables 4 and 5): time and bytes per image vs plaintext.
    Sample(Box<mpc_bench::BenchSampleArgs>),
    /// One HE-Diffusion denoising step: every element encrypted vs packed vs sparse (GPL build).
    #[cfg(feature = "he")]
    He(he_bench::BenchHeArgs),
}

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Generate(args) => generate::run(args).map_err(Into::into),
        Command::Info(args) => info::run(args).map_err(Into::into),
        Command::Audit { target } => match target {
            #[cfg(feature = "he")]
            AuditTarget::He(args) => he_audit::run(args),
        },
        Command::Bench { target } => match target {
            BenchTarget::Plain(args) => bench_plain::run(args).map_err(Into::into),
            BenchTarget::Ops(args) => bench_ops::run(args),
            BenchTarget::Accuracy(args) => bench_accuracy::run(args),
            BenchTarget::Sample(args) => mpc_bench::run(*args).map_err(Into::into),
            #[cfg(feature = "he")]
            BenchTarget::He(args) => he_bench::run(args),
        },
        Command::Keygen(args) => keygen::run(args),
        Command::Party(args) => party::run(args),
        #[cfg(feature = "he")]
        Command::HeServer(args) => he_server::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Owner(args) => mpc_owner::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
