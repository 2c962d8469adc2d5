//! The sampling job at one computing party: receive the client's shares of x_T and the labels
//! and the model owner's shares of the weights, run the sampler on shares with the `Mpc`
//! backend (the same U-Net and sampler code as plain mode), and send the client the shares of
//! x_0 and what the party measured. The party never sees x_T, the labels, the noise, the weights
//! or x_0: it only ever holds two of the three share components of each.
//!
//! `secdiff party` runs this for a `Job::Sample`, and for a `Job::TextSample` the same with a text
//! model (mnist-sd: the client's shares of the prompts' one-hot token rows and of x_T, the
//! owner's shares of the text encoder, U-Net and VAE decoder, then
//! `diffusion::TextToImage::sample_from` on shares); `generate --mode mpc --local` runs it in
//! three threads. Every check that can fail because of what the client or the owner sent (shapes,
//! names, an architecture that differs between them) fails with an error naming the sender,
//! which is also sent back to that sender.

use std::collections::BTreeMap;
use std::time::Instant;

use diffusion::{NoiseSource, SampleOptions, SduTargets, TextToImage};
use mpc::{AShare, FixedConfig, Party};
use net::{CostRecord, Message, PartyServer, Peer, RoleLink};
use nn::mpc::{Methods, SharedParams};
use nn::sd::SdShares;
use nn::unet::UNet;
use nn::{Backend, Mpc, MpcParam};
use ring::{FixedPoint, RingTensor};

use crate::mpc_job::{
    share_from_data, share_to_data, stacked, OpRecord, OwnerHeader, PartyEvent, PartyReport,
    SampleJob, TextOwnerHeader, TextSampleJob, TEXT_MODEL_PARTS,
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

/// The checks every sampling job shares: truncation, methods, fractional bits.
fn validate_settings(
    trunc: Result<mpc::TruncMethod, String>,
    methods: &nn::mpc::MethodNames,
    frac_bits: u32,
) -> Result<(), SampleError> {
    trunc.map_err(SampleError::Job)?;
    Methods::from_names(methods).map_err(|e| SampleError::Job(e.to_string()))?;
    if !(8..=30).contains(&frac_bits) {
        return Err(SampleError::Job(format!(
            "fractional bits must be in 8..=30, got {frac_bits}"
        )));
    }
    Ok(())
}

/// Checks what a job asks for before anything is received.
pub fn validate(job: &SampleJob) -> Result<(), SampleError> {
    let bad = |m: String| Err(SampleError::Job(m));
    validate_settings(job.trunc(), &job.methods, job.frac_bits)?;
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
fn check_same_job(party: &Party, text: &str) -> Result<(), SampleError> {
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

/// Waits for the model owner and returns its link and header (a JSON control message). A
/// connection that closes before its header (an owner retrying because another party was not
/// ready yet) is dropped and waited for again.
fn accept_owner(server: &PartyServer) -> Result<(RoleLink, String), SampleError> {
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
    loop {
        let link = match server.accept(Peer::ModelOwner) {
            Ok(link) => link,
            Err(e) if stale(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        match link.recv_msg() {
            Ok(Message::Control(text)) => return Ok((link, text)),
            Ok(other) => {
                let m = format!("sent {} where its header was expected", kind(&other));
                link.fail(&m);
                return Err(SampleError::Owner(m));
            }
            Err(e) if stale(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Refuses the owner's weights: tells the owner why and returns the error.
fn refuse(owner: &RoleLink, m: String) -> SampleError {
    owner.fail(&m);
    SampleError::Owner(m)
}

/// Receives `count` parameters from the owner: shares ([2, ...]) or, with `public`, encoded
/// values in the clear.
fn receive_params(
    owner: &RoleLink,
    count: usize,
    public: bool,
    id: usize,
    fp: FixedPoint,
    bytes: &mut u64,
) -> Result<Vec<(String, MpcParam)>, SampleError> {
    let mut params = Vec::with_capacity(count);
    for _ in 0..count {
        let (name, shape, data) = match owner.recv_msg()? {
            Message::Shares { name, shape, data } => (name, shape, data),
            other => {
                return Err(refuse(
                    owner,
                    format!("sent {} where a parameter was expected", kind(&other)),
                ))
            }
        };
        *bytes += 8 * data.len() as u64;
        let p = if public {
            let values = fp.decode_slice(&data);
            let ring = RingTensor::new(&shape, data).map_err(|e| refuse(owner, e.to_string()))?;
            MpcParam::Public { ring, values }
        } else {
            if shape.first() != Some(&2) {
                return Err(refuse(
                    owner,
                    format!("parameter `{name}` has shape {shape:?}, not [2, ...] shares"),
                ));
            }
            MpcParam::Secret(share_from_data(id, &shape[1..], data).map_err(|m| refuse(owner, m))?)
        };
        params.push((name, p));
    }
    Ok(params)
}

/// Waits for the model owner and parses its header; refuses (telling the owner) an invalid
/// header, or one whose model differs from the client's job or whose fixed-point encoding does.
/// `describe` gives the header's (same model as the job's, model name, fractional bits).
fn owner_header<H: serde::de::DeserializeOwned>(
    server: &PartyServer,
    job_model: &str,
    job_bits: u32,
    describe: impl FnOnce(&H) -> (bool, String, u32),
) -> Result<(RoleLink, H), SampleError> {
    let (owner, text) = accept_owner(server)?;
    let header: H = serde_json::from_str(&text)
        .map_err(|e| refuse(&owner, format!("sent a header that is not valid ({e})")))?;
    let (same, model, bits) = describe(&header);
    if !same {
        return Err(refuse(
            &owner,
            format!(
                "shares model `{model}`, whose architecture or schedule differs from the client's \
                 `{job_model}`"
            ),
        ));
    }
    if bits != job_bits {
        return Err(refuse(
            &owner,
            format!(
                "encodes weights with {bits} fractional bits, the client's job uses {job_bits}"
            ),
        ));
    }
    Ok((owner, header))
}

/// Waits for the model owner and receives its weights for a U-Net job.
fn receive_weights(
    party: &Party,
    server: &PartyServer,
    job: &SampleJob,
    bytes: &mut u64,
) -> Result<(SharedParams, RoleLink), SampleError> {
    let (owner, header) = owner_header(server, &job.model, job.frac_bits, |h: &OwnerHeader| {
        let same = h.unet == job.unet && h.schedule == job.schedule;
        (same, h.model.clone(), h.frac_bits)
    })?;
    let fp = FixedPoint::new(job.frac_bits);
    let received = receive_params(
        &owner,
        header.params,
        header.public_weights,
        party.id(),
        fp,
        bytes,
    )?;
    let mut params = SharedParams::new();
    for (name, p) in received {
        params
            .insert(&name, p)
            .map_err(|e| refuse(&owner, e.to_string()))?;
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

/// The start every sampling job shares: refuse an invalid job (telling the client), apply its
/// fixed-point settings, note the meter, and check that the other parties got the same job.
fn begin_job(
    party: &mut Party,
    client: &RoleLink,
    valid: Result<(), SampleError>,
    trunc: Result<mpc::TruncMethod, String>,
    frac_bits: u32,
    job: &impl serde::Serialize,
) -> Result<(Baseline, Instant), SampleError> {
    if let Err(e) = valid {
        client.fail(&e.to_string());
        return Err(e);
    }
    let trunc = trunc.map_err(SampleError::Job)?;
    party.set_config(FixedConfig::new(frac_bits, trunc));
    let before = Baseline::now(party);
    let setup_start = Instant::now();
    check_same_job(party, &to_json(job))?;
    Ok((before, setup_start))
}

/// Runs one sampling job at this party (see the module docs), once [`begin_job`] accepted it.
fn serve_sample(
    party: &Party,
    server: &PartyServer,
    client: &RoleLink,
    job: &SampleJob,
    (before, setup_start): (Baseline, Instant),
) -> Result<(), SampleError> {
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
    let timings = Timings {
        seconds_setup,
        seconds_sampling,
        steps,
        from_client,
        from_owner,
    };
    send_results(party, &b, client, &x0, &before, timings)
}

/// The meter's state when a job started.
struct Baseline {
    labels: BTreeMap<&'static str, CostRecord>,
    total: CostRecord,
}

impl Baseline {
    fn now(party: &Party) -> Self {
        Baseline {
            labels: party.meter().by_label().into_iter().collect(),
            total: party.meter().total(),
        }
    }
}

/// What a job measured besides the meter.
struct Timings {
    seconds_setup: f64,
    seconds_sampling: f64,
    steps: usize,
    from_client: u64,
    from_owner: u64,
}

/// Sends the client this party's shares of x_0, then its report.
fn send_results(
    party: &Party,
    b: &Mpc<'_>,
    client: &RoleLink,
    x0: &AShare,
    before: &Baseline,
    t: Timings,
) -> Result<(), SampleError> {
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
            let (bytes, rounds) = diff(&rec, before.labels.get(label));
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
        party: party.id(),
        seconds_setup: t.seconds_setup,
        seconds_sampling: t.seconds_sampling,
        steps: t.steps,
        bytes: total.bytes - before.total.bytes,
        rounds: total.rounds - before.total.rounds,
        messages: total.messages - before.total.messages,
        ops,
        protocols,
        bytes_from_client: t.from_client,
        bytes_from_owner: t.from_owner,
    };
    let (shape, data) = share_to_data(x0);
    client.send_msg(&Message::shares("x_0", &shape, data)?)?;
    client.send_msg(&Message::Control(to_json(&report)))?;
    Ok(())
}

/// Checks what a text-to-image job asks for before anything is received.
pub fn validate_text(job: &TextSampleJob) -> Result<(), SampleError> {
    let bad = |m: String| Err(SampleError::Job(m));
    validate_settings(job.trunc(), &job.methods, job.frac_bits)?;
    job.config
        .validate()
        .map_err(|e| SampleError::Job(e.to_string()))?;
    let tokenizer = job.tokenizer().map_err(SampleError::Job)?;
    if tokenizer.vocab_size() != job.config.text_encoder.vocab_size {
        return bad(format!(
            "{} vocabulary words for a text encoder of {}",
            tokenizer.vocab_size(),
            job.config.text_encoder.vocab_size
        ));
    }
    if job.prompts == 0 || job.prompts > MAX_BATCH {
        return bad(format!("{} prompts: not in 1..={MAX_BATCH}", job.prompts));
    }
    if !(job.guidance.is_finite() && job.scaling_factor.is_finite() && job.scaling_factor > 0.0) {
        return bad("guidance and scaling factor must be finite, the factor positive".into());
    }
    let schedule = diffusion::schedule_of(&job.config.scheduler)?;
    diffusion::sd_ddim(job.steps)
        .timesteps(&schedule)
        .map_err(|e| SampleError::Job(e.to_string()))?;
    if let Some(eta) = job.sdu_eta {
        if !(eta.is_finite() && eta >= 0.0) {
            return bad(format!(
                "SDU learning rate {eta}: not a non-negative number"
            ));
        }
    }
    Ok(())
}

/// Waits for the owner of a text model and receives its three parts' weights.
fn receive_text_weights(
    party: &Party,
    server: &PartyServer,
    job: &TextSampleJob,
    bytes: &mut u64,
) -> Result<(SdShares, RoleLink), SampleError> {
    let (owner, header) =
        owner_header(server, &job.model, job.frac_bits, |h: &TextOwnerHeader| {
            let same = to_json(&h.config) == to_json(&job.config);
            (same, h.model.clone(), h.frac_bits)
        })?;
    let fp = FixedPoint::new(job.frac_bits);
    let received = receive_params(&owner, header.params, false, party.id(), fp, bytes)?;
    let mut parts = [
        SharedParams::new(),
        SharedParams::new(),
        SharedParams::new(),
    ];
    for (name, p) in received {
        let slot = TEXT_MODEL_PARTS.iter().position(|part| {
            name.strip_prefix(part)
                .is_some_and(|rest| rest.starts_with('/'))
        });
        let Some(k) = slot else {
            return Err(refuse(
                &owner,
                format!("parameter `{name}` is not under text_encoder/, unet/ or vae/"),
            ));
        };
        let local = &name[TEXT_MODEL_PARTS[k].len() + 1..];
        parts[k]
            .insert(local, p)
            .map_err(|e| refuse(&owner, e.to_string()))?;
    }
    let [text_encoder, unet, vae] = parts;
    Ok((
        SdShares {
            text_encoder,
            unet,
            vae,
        },
        owner,
    ))
}

/// Runs one text-to-image job at this party: the client's shares of the prompts' token rows
/// and of x_T, the owner's shares of the three models, then the text encoder, every guided DDIM
/// step and the VAE decoder on shares (`diffusion::TextToImage::sample_from`); the client gets
/// the shares of the image and the report.
fn serve_text_sample(
    party: &Party,
    server: &PartyServer,
    client: &RoleLink,
    job: &TextSampleJob,
    (before, setup_start): (Baseline, Instant),
) -> Result<(), SampleError> {
    let id = party.id();
    let mut from_client = 0u64;
    let tokens = recv_share(client, id, "tokens", &job.token_shape(), &mut from_client)?;
    let x_t = recv_share(client, id, "x_T", &job.latent_shape(), &mut from_client)?;
    let sdu_targets = match job.sdu_eta {
        Some(_) => Some(recv_share(
            client,
            id,
            "sdu",
            &job.sdu_shape(),
            &mut from_client,
        )?),
        None => None,
    };
    let mut from_owner = 0u64;
    let (mut shares, owner) = receive_text_weights(party, server, job, &mut from_owner)?;
    let methods = Methods::from_names(&job.methods).map_err(|e| SampleError::Job(e.to_string()))?;
    let tokenizer = job.tokenizer().map_err(SampleError::Job)?;
    let b = Mpc::new(party, methods);
    let pipe = TextToImage::from_sources(
        &b,
        job.config.clone(),
        tokenizer,
        job.scaling_factor,
        [&mut shares.text_encoder, &mut shares.unet, &mut shares.vae],
    )
    .map_err(|e| refuse(&owner, format!("weights do not fit the model: {e}")))?;
    for (part, src) in
        TEXT_MODEL_PARTS
            .iter()
            .zip([&shares.text_encoder, &shares.unet, &shares.vae])
    {
        let unused = src.unused();
        if !unused.is_empty() {
            return Err(refuse(
                &owner,
                format!("sent {part} parameters the model does not have: {unused:?}"),
            ));
        }
    }
    owner.send_msg(&Message::Control("weights received".into()))?;
    let seconds_setup = setup_start.elapsed().as_secs_f64();

    let start = Instant::now();
    let opts = SampleOptions {
        steps: job.steps,
        guidance: job.guidance,
    };
    // One target per step: the client's stacked shares, cut along the step axis (local).
    let sdu = match (job.sdu_eta, &sdu_targets) {
        (Some(eta), Some(all)) => {
            let latent = job.latent_shape();
            let eps = (0..job.steps)
                .map(|k| b.reshape(&b.narrow(all, 0, k, 1)?, &latent))
                .collect::<nn::Result<Vec<_>>>()
                .map_err(|e| SampleError::Job(format!("sdu: {e}")))?;
            Some(SduTargets { eta, eps })
        }
        _ => None,
    };
    let x0 = pipe.sample_from(&b, &tokens, x_t, opts, sdu.as_ref(), |i| {
        // A failed send shows up as an error at the next receive.
        let _ = client.send_msg(&Message::Control(to_json(&PartyEvent::Step {
            step: i + 1,
            total: job.steps,
        })));
    })?;
    let timings = Timings {
        seconds_setup,
        seconds_sampling: start.elapsed().as_secs_f64(),
        steps: job.steps,
        from_client,
        from_owner,
    };
    send_results(party, &b, client, &x0, &before, timings)
}

/// Runs a sampling job of either kind (other jobs are not this module's). On error the caller
/// tells the client and the other parties.
pub fn serve_job(
    party: &mut Party,
    server: &PartyServer,
    client: &RoleLink,
    job: &crate::party::Job,
) -> Result<(), SampleError> {
    use crate::party::Job;
    match job {
        Job::Sample(job) => {
            let start = begin_job(
                party,
                client,
                validate(job),
                job.trunc(),
                job.frac_bits,
                job,
            )?;
            serve_sample(party, server, client, job, start)
        }
        Job::TextSample(job) => {
            let valid = validate_text(job);
            let start = begin_job(party, client, valid, job.trunc(), job.frac_bits, job)?;
            serve_text_sample(party, server, client, job, start)
        }
        other => Err(SampleError::Job(format!("{other:?} is not a sampling job"))),
    }
}
