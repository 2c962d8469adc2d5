//! The model owner: shares its weights with the three parties (`secdiff owner`), so that no
//! single party (and not the client) ever sees them. Each parameter is encoded in fixed point
//! and split into three replicated shares; party P_i receives components i and i+1. With
//! `--public-weights` the owner instead sends the encoded weights in the clear (the variant in
//! which only the client's data is private).

use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use diffusion::ModelDir;
use mpc::deal;
use net::{connect_parties, Message, PartiesConfig, Peer, RoleLink, PARTIES};
use nn::unet::UNet;
use nn::weights::Recording;
use nn::Plain;
use rand08::SeedableRng;
use ring::{FixedPoint, RingTensor};

use crate::mpc_job::{share_to_data, OwnerHeader};

#[derive(clap::Args, Debug)]
pub struct OwnerArgs {
    /// The model whose weights to share (a name under models/ or a directory).
    #[arg(long, default_value = "cipherdm-mnist")]
    pub model: String,
    /// The deployment (`parties.toml`) whose parties receive the weights.
    #[arg(long)]
    pub parties: PathBuf,
    /// Send the weights in the clear instead of secret-shared.
    #[arg(long)]
    pub public_weights: bool,
    /// Fractional bits of the fixed-point encoding (must match the client's job).
    #[arg(long, default_value_t = 18)]
    pub frac_bits: u32,
    /// How long to keep trying to reach the parties (they accept the owner once a client's job
    /// has arrived).
    #[arg(long, default_value_t = 600)]
    pub wait_secs: u64,
}

/// What sharing the weights cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct OwnerStats {
    pub params: usize,
    pub bytes_sent: u64,
}

/// Shares `model`'s weights with the three parties on `links` (in party order) and waits until
/// each has built the model from them.
pub fn share_weights(
    links: &[RoleLink; PARTIES],
    model: &ModelDir,
    public_weights: bool,
    frac_bits: u32,
) -> Result<OwnerStats, Box<dyn Error + Send + Sync>> {
    let mut source = Recording::new(model.flax_params()?);
    UNet::load(&Plain, &model.config.unet, &mut source)?;
    let (mut flax, records) = source.into_parts();
    let header = OwnerHeader {
        model: model.name.clone(),
        unet: model.config.unet.clone(),
        schedule: model.config.schedule.clone(),
        frac_bits,
        public_weights,
        params: records.len(),
    };
    let header = Message::Control(serde_json::to_string(&header)?);
    for link in links {
        link.send_msg(&header)?;
    }
    let fp = FixedPoint::new(frac_bits);
    let mut rng = rand08::rngs::StdRng::from_entropy();
    let mut bytes = 0u64;
    for r in &records {
        let values = flax.values(&r.name, &r.shape)?;
        let encoded = RingTensor::new(&r.shape, fp.encode_f32(&values)?)?;
        if public_weights {
            let msg = Message::shares(&r.name, &r.shape, encoded.into_data())?;
            for link in links {
                bytes += 8 * r.numel() as u64;
                link.send_msg(&msg)?;
            }
        } else {
            for (p, share) in deal(&encoded, &mut rng).into_iter().enumerate() {
                let (shape, data) = share_to_data(&share.into_share(p)?);
                bytes += 8 * data.len() as u64;
                links[p].send_msg(&Message::shares(&r.name, &shape, data)?)?;
            }
        }
    }
    for link in links {
        match link.recv_msg()? {
            Message::Control(t) if t == "weights received" => {}
            other => {
                return Err(format!(
                    "{} answered {other:?} instead of confirming the weights",
                    link.peer()
                )
                .into())
            }
        }
    }
    Ok(OwnerStats {
        params: records.len(),
        bytes_sent: bytes,
    })
}

/// `secdiff owner`: connect (retrying while the parties are not ready for an owner), share,
/// wait for the parties' confirmation, exit.
pub fn run(args: OwnerArgs) -> Result<(), Box<dyn Error>> {
    let model = diffusion::resolve_model(&args.model)?;
    let cfg = PartiesConfig::load(&args.parties)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.wait_secs);
    let mut told = None;
    let links = loop {
        match connect_parties(&cfg, Peer::ModelOwner) {
            Ok(links) => break links,
            Err(e) if Instant::now() < deadline => {
                // The parties accept the owner once a client's job has arrived.
                if told.is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(30)) {
                    eprintln!("owner: waiting for the parties to be ready ({e})");
                    told = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let stats = share_weights(&links, &model, args.public_weights, args.frac_bits)
        .map_err(|e| -> Box<dyn Error> { e.to_string().into() })?;
    eprintln!(
        "owner: shared {} parameters of {} ({}) with the three parties: {:.1} kB sent",
        stats.params,
        model.name,
        if args.public_weights {
            "in the clear"
        } else {
            "secret-shared"
        },
        stats.bytes_sent as f64 / 1e3
    );
    Ok(())
}
