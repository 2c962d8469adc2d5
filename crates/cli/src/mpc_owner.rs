//! The model owner: shares its weights with the three parties (`secdiff owner`), so that no
//! single party (and not the client) ever sees them: a label-conditional U-Net
//! ([`share_weights`]) or a text model's three parts ([`share_text_weights`]). Each parameter is
//! encoded in fixed point and split into three replicated shares; party P_i receives components
//! i and i+1. With
//! `--public-weights` the owner instead sends the encoded weights in the clear (the variant in
//! which only the client's data is private).

use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use diffusion::ModelDir;
use mpc::deal;
use net::{connect_parties, Message, PartiesConfig, Peer, RoleLink, PARTIES};
use nn::sd::model_files::ModelFiles;
use nn::unet::UNet;
use nn::weights::Recording;
use nn::{MpcParam, Plain};
use rand08::SeedableRng;
use ring::{FixedPoint, RingTensor};

use crate::mpc_job::{share_to_data, OwnerHeader, TextOwnerHeader, TEXT_MODEL_PARTS};

#[derive(clap::Args, Debug)]
pub struct OwnerArgs {
    /// The model whose weights to share (a name under models/ or a directory): cipherdm-mnist,
    /// or a text model such as mnist-sd (its text encoder, U-Net and VAE decoder).
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
    await_confirmations(links)?;
    Ok(OwnerStats {
        params: records.len(),
        bytes_sent: bytes,
    })
}

/// Shares the weights of a text model (mnist-sd: text encoder, U-Net, VAE decoder) with the three
/// parties on `links`, each parameter named `<part>/<name>`, and waits until each has built the
/// pipeline from them. Text models' weights are always secret-shared.
pub fn share_text_weights(
    links: &[RoleLink; PARTIES],
    name: &str,
    files: &ModelFiles,
    frac_bits: u32,
) -> Result<OwnerStats, Box<dyn Error + Send + Sync>> {
    let mut rng = rand08::rngs::StdRng::from_entropy();
    let shares = nn::sd::deal_model_files(files, frac_bits, &mut rng)?;
    let params = shares[0].text_encoder.len() + shares[0].unet.len() + shares[0].vae.len();
    let header = TextOwnerHeader {
        model: name.to_string(),
        config: files.config.clone(),
        frac_bits,
        params,
    };
    let header = Message::Control(serde_json::to_string(&header)?);
    for link in links {
        link.send_msg(&header)?;
    }
    let mut bytes = 0u64;
    for (link, mine) in links.iter().zip(&shares) {
        for (part, src) in TEXT_MODEL_PARTS
            .iter()
            .zip([&mine.text_encoder, &mine.unet, &mine.vae])
        {
            for (name, p) in src.iter() {
                let MpcParam::Secret(share) = p else {
                    return Err(format!("parameter `{name}` was not dealt as shares").into());
                };
                let (shape, data) = share_to_data(share);
                bytes += 8 * data.len() as u64;
                link.send_msg(&Message::shares(&format!("{part}/{name}"), &shape, data)?)?;
            }
        }
    }
    await_confirmations(links)?;
    Ok(OwnerStats {
        params,
        bytes_sent: bytes,
    })
}

/// Waits until each party confirms it built its model from the weights.
fn await_confirmations(links: &[RoleLink; PARTIES]) -> Result<(), Box<dyn Error + Send + Sync>> {
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
    Ok(())
}

/// The model an owner process shares.
enum OwnedModel {
    /// A label-conditional U-Net (cipherdm-mnist).
    Unet(Box<ModelDir>),
    /// A text-to-image model (mnist-sd).
    Text(Box<ModelFiles>),
}

/// `secdiff owner`: connect (retrying while the parties are not ready for an owner), share,
/// wait for the parties' confirmation, exit.
pub fn run(args: OwnerArgs) -> Result<(), Box<dyn Error>> {
    // A text model (mnist-sd) or a label-conditional U-Net (cipherdm-mnist).
    let dir = crate::eval::resolve_model_dir(&args.model)?;
    let text = nn::sd::model_files::is_text_to_image(&dir);
    if text && args.public_weights {
        return Err(format!(
            "{}: text models' weights are always secret-shared (no --public-weights)",
            args.model
        )
        .into());
    }
    let model = if text {
        OwnedModel::Text(Box::new(ModelFiles::load(&dir)?))
    } else {
        OwnedModel::Unet(Box::new(diffusion::resolve_model(&args.model)?))
    };
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
    let stats = match &model {
        OwnedModel::Unet(model) => {
            share_weights(&links, model, args.public_weights, args.frac_bits)
        }
        OwnedModel::Text(files) => share_text_weights(&links, &args.model, files, args.frac_bits),
    }
    .map_err(|e| -> Box<dyn Error> { e.to_string().into() })?;
    eprintln!(
        "owner: shared {} parameters of {} ({}) with the three parties: {:.1} kB sent",
        stats.params,
        args.model,
        if args.public_weights {
            "in the clear"
        } else {
            "secret-shared"
        },
        stats.bytes_sent as f64 / 1e3
    );
    Ok(())
}
