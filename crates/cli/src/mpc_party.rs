//! The sampling job at one computing party: receive the client's shares of x_T and the labels
//! and the model owner's shares of the weights, run the sampler on shares with the `Mpc`
//! backend (the same U-Net and sampler code as plain mode), and send the client the shares of
//! x_0 and what the party measured. The party never sees x_T, the labels, the noise, the weights
//! or x_0: it only ever holds two of the three share components of each.
//!
//! `secdiff party` runs this for a `Job::Sample`; `generate --mode mpc --local` runs it in three
//! threads. Every check that can fail because of what the client or the owner sent (shapes,
//! names, an architecture that differs between them) fails with an error naming the sender,
//! which is also sent back to that sender.

use std::collections::BTreeMap;
use std::time::Instant;

use diffusion::NoiseSource;
use mpc::{AShare, FixedConfig, Party};
use net::{CostRecord, Message, PartyServer, Peer, RoleLink};
use nn::mpc::{Methods, SharedParams};
use nn::unet::UNet;
use nn::{Mpc, MpcParam};
use ring::{FixedPoint, RingTensor};

use crate::mpc_job::{
    share_from_data, share_to_data, stacked, OpRecord, OwnerHeader, PartyEvent, PartyReport,
    SampleJob,
};

/// Largest batch and image side a job may ask for (bounds what a party allocates for a request).
const MAX_BATCH: usize = 4096;
const MAX_SIDE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// The job cannot be run as described.
    #[error("bad sampling job: {0}")]
    Job(String),
    /// The client's and the owner's descriptions of the model disagree, or the owner's weights
    /// do not fit the model.
    #[error("the model owner: {0}")]
    Owner(String),
    /// The other parties received a different job.
    #[error("the parties disagree on the job: {0}")]
    Mismatch(String),
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error(transparent)]
    Mpc(#[from] mpc::MpcError),
    #[error(transparent)]
    Model(#[from] nn::Error),
    #[error(transparent)]
    Diffusion(#[from] diffusion::Error),
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}

/// Checks what a job asks for before anything is received.
pub fn validate(job: &SampleJob) -> Result<(), SampleError> {
    let bad = |m: String| Err(SampleError::Job(m));
    job.trunc().map_err(SampleError::Job)?;
    Methods::from_names(&job.methods).map_err(|e| SampleError::Job(e.to_string()))?;
    if !(8..=30).contains(&job.frac_bits) {
        return bad(format!(
            "fractional bits must be in 8..=30, got {}",
            job.frac_bits
        ));
    }
    job.unet
        .validate()
        .map_err(|e| SampleError::Job(e.to_string()))?;
    let [n, c, h, w] = job.shape;
    let m = job.unet.size_multiple();
    if n == 0 || n > MAX_BATCH {
        return bad(format!("batch {n} is not in 1..={MAX_BATCH}"));
    }
    if c != job.unet.img_channels
        || h == 0
        || w == 0
        || h > MAX_SIDE
        || w > MAX_SIDE
        || h % m != 0
        || w % m != 0
    {
        return bad(format!(
            "image shape {:?} does not fit the model ({} channels, sides multiples of {m} up to {MAX_SIDE})",
            &job.shape[1..],
            job.unet.img_channels
        ));
    }
    let schedule = job
        .schedule
        .build()
        .map_err(|e| SampleError::Job(e.to_string()))?;
    let sampler = job.sampler.sampler().map_err(SampleError::Job)?;
    sampler
        .timesteps(&schedule)
        .map_err(|e| SampleError::Job(e.to_string()))?;
    Ok(())
}

/// All three parties must run the same job: each sends the job's JSON to the other two and
/// compares (1 round, the JSON's length in bytes to each peer).
fn check_same_job(party: &Party, job: &SampleJob) -> Result<(), SampleError> {
    let text = to_json(job);
    let cx = party.begin("job_check");
    let me = party.id();
    let others = [(me + 1) % 3, (me + 2) % 3];
    for &o in &others {
        cx.send_abs(o, text.as_bytes().to_vec())?;
    }
    for &o in &others {
        let got = cx.recv_abs(o)?;
        if got != text.as_bytes() {
            return Err(SampleError::Mismatch(format!(
                "P{o} received a different job from the client than P{me}"
            )));
        }
    }
    Ok(())
}

/// Receives the shares `name` of a tensor of `shape` from `link`; a wrong name or shape is
/// reported to the sender and returned as an error.
fn recv_share(
    link: &RoleLink,
    id: usize,
    name: &str,
    shape: &[usize],
    counted: &mut u64,
) -> Result<AShare, SampleError> {
    let data = link.recv_shares(name, &stacked(shape))?;
    *counted += 8 * data.len() as u64;
    share_from_data(id, shape, data).map_err(|e| SampleError::Job(format!("{name}: {e}")))
}

/// The client's noise for stochastic steps, asked for when the sampler needs it.
struct ClientNoise<'a> {
    link: &'a RoleLink,
    id: usize,
    bytes: u64,
}

impl NoiseSource<Mpc<'_>> for ClientNoise<'_> {
    fn noise(&mut self, _b: &Mpc<'_>, t: usize, shape: &[usize]) -> nn::Result<AShare> {
        let backend = |e: SampleError| nn::Error::Backend(Box::new(e));
        self.link
            .send_msg(&Message::Control(to_json(&PartyEvent::NeedNoise { t })))
            .map_err(|e| backend(e.into()))?;
        recv_share(self.link, self.id, "noise", shape, &mut self.bytes).map_err(backend)
    }
}

/// Waits for the model owner and receives its weights. A connection that closes before its
/// header (an owner retrying because another party was not ready yet) is dropped and waited
/// for again.
fn receive_weights(
    party: &Party,
    server: &PartyServer,
    job: &SampleJob,
    bytes: &mut u64,
) -> Result<(SharedParams, RoleLink), SampleError> {
    // An owner whose dial another party refused gives up all three connections and retries, so
    // a connection may be dead before its header: skip it and keep waiting (up to the deadline).
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    let stale = |e: &net::NetError| {
        matches!(
            e,
            net::NetError::Closed { .. }
                | net::NetError::Died { .. }
                | net::NetError::Io { .. }
                | net::NetError::AcceptTimeout { .. }
                | net::NetError::Handshake { .. }
        ) && Instant::now() < deadline
    };
    let (owner, header) = loop {
        let link = match server.accept(Peer::ModelOwner) {
            Ok(link) => link,
            Err(e) if stale(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        match link.recv_msg() {
            Ok(Message::Control(text)) => {
                let header: OwnerHeader = serde_json::from_str(&text).map_err(|e| {
                    let m = format!("sent a header that is not valid ({e})");
                    link.fail(&m);
                    SampleError::Owner(m)
                })?;
                break (link, header);
            }
            Ok(other) => {
                let m = format!("sent {} where its header was expected", kind(&other));
                link.fail(&m);
                return Err(SampleError::Owner(m));
            }
            Err(e) if stale(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let refuse = |m: String| {
        owner.fail(&m);
        SampleError::Owner(m)
    };
    if header.unet != job.unet || header.schedule != job.schedule {
        return Err(refuse(format!(
            "shares model `{}`, whose architecture or schedule differs from the client's `{}`",
            header.model, job.model
        )));
    }
    if header.frac_bits != job.frac_bits {
        return Err(refuse(format!(
            "encodes weights with {} fractional bits, the client's job uses {}",
            header.frac_bits, job.frac_bits
        )));
    }
    let id = party.id();
    let fp = FixedPoint::new(job.frac_bits);
    let mut params = SharedParams::new();
    for _ in 0..header.params {
        let (name, shape, data) = match owner.recv_msg()? {
            Message::Shares { name, shape, data } => (name, shape, data),
            other => {
                return Err(refuse(format!(
                    "sent {} where a parameter was expected",
                    kind(&other)
                )))
            }
        };
        *bytes += 8 * data.len() as u64;
        let p = if header.public_weights {
            let values = fp.decode_slice(&data);
            let ring = RingTensor::new(&shape, data).map_err(|e| refuse(e.to_string()))?;
            MpcParam::Public { ring, values }
        } else {
            if shape.first() != Some(&2) {
                return Err(refuse(format!(
                    "parameter `{name}` has shape {shape:?}, not [2, ...] shares"
                )));
            }
            MpcParam::Secret(share_from_data(id, &shape[1..], data).map_err(refuse)?)
        };
        params.insert(&name, p).map_err(|e| refuse(e.to_string()))?;
    }
    Ok((params, owner))
}

fn kind(m: &Message) -> String {
    match m {
        Message::Control(t) => format!(
            "control message {:?}",
            t.chars().take(60).collect::<String>()
        ),
        Message::Shares { name, .. } => format!("shares {name:?}"),
        Message::Error(e) => format!("error {e:?}"),
    }
}

fn diff(after: &CostRecord, before: Option<&CostRecord>) -> (u64, u64) {
    let b = before.cloned().unwrap_or_default();
    (after.bytes - b.bytes, after.rounds - b.rounds)
}

/// Runs one sampling job at this party (see the module docs). On error the caller tells the
/// client and the other parties.
pub fn serve_sample(
    party: &mut Party,
    server: &PartyServer,
    client: &RoleLink,
    job: &SampleJob,
) -> Result<(), SampleError> {
    if let Err(e) = validate(job) {
        client.fail(&e.to_string());
        return Err(e);
    }
    let trunc = job.trunc().map_err(SampleError::Job)?;
    party.set_config(FixedConfig::new(job.frac_bits, trunc));
    let party: &Party = party;
    let labels_before: BTreeMap<&'static str, CostRecord> =
        party.meter().by_label().into_iter().collect();
    let total_before = party.meter().total();
    let setup_start = Instant::now();
    check_same_job(party, job)?;

    let id = party.id();
    let [n, c, h, w] = job.shape;
    let mut from_client = 0u64;
    let x_t = recv_share(client, id, "x_T", &[n, c, h, w], &mut from_client)?;
    let labels = match job.unet.num_classes {
        Some(k) => Some(recv_share(client, id, "labels", &[n, k], &mut from_client)?),
        None => None,
    };
    let mut from_owner = 0u64;
    let (mut params, owner) = receive_weights(party, server, job, &mut from_owner)?;

    let methods = Methods::from_names(&job.methods).map_err(|e| SampleError::Job(e.to_string()))?;
    let b = Mpc::new(party, methods);
    let unet = match UNet::load(&b, &job.unet, &mut params) {
        Ok(u) => u,
        Err(e) => {
            owner.fail(&format!("weights do not fit the model: {e}"));
            return Err(SampleError::Owner(format!(
                "weights do not fit the model: {e}"
            )));
        }
    };
    let unused = params.unused();
    if !unused.is_empty() {
        let m = format!("sent parameters the model does not have: {unused:?}");
        owner.fail(&m);
        return Err(SampleError::Owner(m));
    }
    owner.send_msg(&Message::Control("weights received".into()))?;
    let seconds_setup = setup_start.elapsed().as_secs_f64();

    let schedule = job
        .schedule
        .build()
        .map_err(|e| SampleError::Job(e.to_string()))?;
    let sampler = job.sampler.sampler().map_err(SampleError::Job)?;
    let mut noise = ClientNoise {
        link: client,
        id,
        bytes: 0,
    };
    let start = Instant::now();
    let mut steps = 0;
    let x0 = sampler.sample(
        &b,
        &schedule,
        x_t,
        |x, t| unet.forward(&b, x, &vec![t; n], labels.as_ref()),
        &mut noise,
        |info| {
            steps = info.done;
            // A failed send shows up as an error at the next receive.
            let _ = client.send_msg(&Message::Control(to_json(&PartyEvent::Step {
                step: info.done,
                total: info.total,
            })));
        },
    )?;
    let seconds_sampling = start.elapsed().as_secs_f64();
    from_client += noise.bytes;

    let total = party.meter().total();
    let ops = b
        .stats()
        .snapshot()
        .into_iter()
        .map(|(op, c)| OpRecord {
            op: op.to_string(),
            calls: c.calls,
            seconds: c.seconds,
            bytes: c.bytes,
            rounds: c.rounds,
        })
        .collect();
    let protocols = party
        .meter()
        .by_label()
        .into_iter()
        .filter_map(|(label, rec)| {
            let (bytes, rounds) = diff(&rec, labels_before.get(label));
            (bytes > 0 || rounds > 0).then(|| OpRecord {
                op: label.to_string(),
                calls: 0,
                seconds: 0.0,
                bytes,
                rounds,
            })
        })
        .collect();
    let report = PartyReport {
        party: id,
        seconds_setup,
        seconds_sampling,
        steps,
        bytes: total.bytes - total_before.bytes,
        rounds: total.rounds - total_before.rounds,
        messages: total.messages - total_before.messages,
        ops,
        protocols,
        bytes_from_client: from_client,
        bytes_from_owner: from_owner,
    };
    let (shape, data) = share_to_data(&x0);
    client.send_msg(&Message::shares("x_0", &shape, data)?)?;
    client.send_msg(&Message::Control(to_json(&report)))?;
    Ok(())
}
