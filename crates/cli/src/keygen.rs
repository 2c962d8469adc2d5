//! `secdiff keygen`: creates the key material of one deployment (a private CA and a TLS
//! certificate for each party, the client and the model owner) in a directory that
//! `parties.toml` then names as `tls_dir`.

use clap::Args;
use net::{KeySet, Peer};
use std::path::PathBuf;

#[derive(Args)]
pub struct KeygenArgs {
    /// Directory to write ca.pem, ca.key and <role>.pem / <role>.key into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Number of computing parties (secdiff runs exactly 3).
    #[arg(long, default_value_t = 3)]
    parties: usize,
    /// Replace keys that already exist in the directory.
    #[arg(long)]
    force: bool,
}

pub fn run(args: KeygenArgs) -> Result<(), Box<dyn std::error::Error>> {
    if args.parties != net::PARTIES {
        return Err(format!(
            "--parties {}: secdiff runs exactly {} computing parties",
            args.parties,
            net::PARTIES
        )
        .into());
    }
    let keys = KeySet::generate()?;
    let written = keys.write_dir(&args.out, args.force)?;
    for path in &written {
        println!("wrote {}", path.display());
    }
    let roles: Vec<String> = Peer::ALL.iter().map(|r| r.cert_name()).collect();
    println!(
        "certificates for {} signed by a new CA; give each participant ca.pem and only its own \
         <role>.pem/<role>.key, keep ca.key offline, and set tls_dir = \"{}\" in parties.toml",
        roles.join(", "),
        args.out.display()
    );
    Ok(())
}
