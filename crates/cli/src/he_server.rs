//! `secdiff he-server`: the HE-Diffusion server. It holds the models, runs each client's U-Net
//! after the split point in plaintext and updates the encrypted part of the latent with
//! ciphertext * scalar and ciphertext + plaintext. It never holds a secret key.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use he::model::{LoadedModel, UNetServer};

use crate::he_util::CliResult;

#[derive(Args, Debug)]
pub struct HeServerArgs {
    /// Address to listen on (host:port; port 0 picks a free one and prints it).
    #[arg(long)]
    listen: String,
    /// Models to serve (names under models/ or directories); repeat the flag for several.
    #[arg(long = "model", default_value = "cipherdm-mnist")]
    models: Vec<String>,
    /// Seconds to wait for a client on any read or write before dropping the session.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Stop after this many sessions (default: serve forever).
    #[arg(long)]
    sessions: Option<usize>,
}

pub fn run(args: HeServerArgs) -> CliResult {
    let models = args
        .models
        .iter()
        .map(|m| LoadedModel::load(m))
        .collect::<he::Result<Vec<_>>>()?;
    let listener = TcpListener::bind(&args.listen)
        .map_err(|e| format!("--listen {}: cannot listen: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "he-server: listening on {addr}, serving {}",
        models
            .iter()
            .map(|m| m.name().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    he::tcp::serve(
        listener,
        Arc::new(UNetServer::new(models)),
        Duration::from_secs(args.timeout.max(1)),
        args.sessions,
        Arc::new(|peer: &str, result: he::Result<()>| match result {
            Ok(()) => eprintln!("he-server: session with {peer} completed"),
            Err(e) => eprintln!("he-server: session with {peer} failed: {e}"),
        }),
    )?;
    Ok(())
}
