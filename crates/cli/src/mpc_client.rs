//! The client of an MPC sampling session: it owns x_T, the labels and the step noise, sends the
//! parties only secret shares of them, answers the parties' noise requests, and is the only one
//! who reconstructs x_0 (from the shares of at least two parties, which must agree).

use std::time::Instant;

use diffusion::NoiseSource;
use mpc::{deal_values, reconstruct, OutputShare};
use net::{Message, RoleLink, PARTIES};
use nn::{Plain, PlainTensor};
use rand08::SeedableRng;
use ring::FixedPoint;

use crate::mpc_job::{
    share_from_data, share_to_data, stacked, PartyEvent, PartyReport, SampleJob, TextSampleJob,
};
use crate::party::Job;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Model(#[from] nn::Error),
}

/// What the client got back.
pub struct ClientOutcome {
    /// x_0, NCHW.
    pub x0: Vec<f32>,
    pub reports: Vec<PartyReport>,
    /// From sending the job to holding x_0.
    pub seconds: f64,
    /// The noise the client supplied, by timestep, in the order it was asked for (so that a
    /// plaintext reference can replay exactly the same sample).
    pub noise: Vec<(usize, Vec<f32>)>,
}

/// Sends each party its shares of `values` (encoded with `fp`) as `name`.
fn send_shared(
    links: &[RoleLink; PARTIES],
    name: &str,
    shape: &[usize],
    values: &[f32],
    fp: FixedPoint,
    rng: &mut rand08::rngs::StdRng,
) -> Result<(), ClientError> {
    let shares = deal_values(&fp, shape, values, rng)
        .map_err(|e| ClientError::Protocol(format!("{name}: {e}")))?;
    for (link, share) in links.iter().zip(&shares) {
        let (shape, data) = share_to_data(share);
        link.send_msg(&Message::shares(name, &shape, data)?)?;
    }
    Ok(())
}

/// One message from each party, which must be of the same kind.
fn next_round(links: &[RoleLink; PARTIES]) -> Result<Vec<Message>, ClientError> {
    links.iter().map(|l| Ok(l.recv_msg()?)).collect()
}

/// Runs the client's side of the job on `links` (the three parties, in order). `x_t` is NCHW of
/// `job.shape`; `labels` one per image for class-conditional models.
pub fn run_client(
    links: &[RoleLink; PARTIES],
    job: &SampleJob,
    x_t: &[f32],
    labels: &[usize],
    noise: &mut dyn NoiseSource<Plain>,
    on_step: impl FnMut(usize, usize),
) -> Result<ClientOutcome, ClientError> {
    let shape = job.shape;
    let mut inputs = vec![("x_T", shape.to_vec(), x_t.to_vec())];
    if let Some(k) = job.unet.num_classes {
        let onehot = nn::unet::one_hot(labels, k).ok_or_else(|| {
            ClientError::Protocol(format!("labels {labels:?} outside the {k} classes"))
        })?;
        inputs.push(("labels", vec![shape[0], k], onehot));
    }
    let session = Session {
        job: Job::Sample(Box::new(job.clone())),
        frac_bits: job.frac_bits,
        inputs,
        output_shape: shape.to_vec(),
    };
    run_session(links, &session, noise, on_step)
}

/// The client's side of a text-to-image job: `tokens` are the prompts' one-hot token rows
/// (`job.token_shape()`), `x_t` the initial latents (`job.latent_shape()`), `sdu` the SDU
/// targets when the job has them (`job.sdu_shape()`); returns the image.
pub fn run_text_client(
    links: &[RoleLink; PARTIES],
    job: &TextSampleJob,
    tokens: &[f32],
    x_t: &[f32],
    sdu: Option<&[f32]>,
    on_step: impl FnMut(usize, usize),
) -> Result<ClientOutcome, ClientError> {
    let mut inputs = vec![
        ("tokens", job.token_shape().to_vec(), tokens.to_vec()),
        ("x_T", job.latent_shape().to_vec(), x_t.to_vec()),
    ];
    match (job.sdu_eta, sdu) {
        (Some(_), Some(targets)) => inputs.push(("sdu", job.sdu_shape(), targets.to_vec())),
        (None, None) => {}
        _ => {
            return Err(ClientError::Protocol(
                "SDU targets go with a job that has an SDU learning rate, and only then".into(),
            ))
        }
    }
    let session = Session {
        job: Job::TextSample(Box::new(job.clone())),
        frac_bits: job.frac_bits,
        inputs,
        output_shape: job.image_shape().to_vec(),
    };
    // Deterministic DDIM: the parties never ask for step noise.
    run_session(links, &session, &mut NoNoise, on_step)
}

/// One sampling session as the client sees it: the job, the inputs it shares (name, shape,
/// values) in the order the parties receive them, and the shape of the output.
struct Session {
    job: Job,
    frac_bits: u32,
    inputs: Vec<(&'static str, Vec<usize>, Vec<f32>)>,
    output_shape: Vec<usize>,
}

/// A noise source for jobs whose sampler draws none: a request is a protocol error.
struct NoNoise;

impl NoiseSource<Plain> for NoNoise {
    fn noise(&mut self, _b: &Plain, t: usize, _shape: &[usize]) -> nn::Result<PlainTensor> {
        Err(nn::Error::Config(format!(
            "the parties asked for step noise at timestep {t} in a deterministic job"
        )))
    }
}

fn run_session(
    links: &[RoleLink; PARTIES],
    session: &Session,
    noise: &mut dyn NoiseSource<Plain>,
    mut on_step: impl FnMut(usize, usize),
) -> Result<ClientOutcome, ClientError> {
    let start = Instant::now();
    let fp = FixedPoint::new(session.frac_bits);
    let mut rng = rand08::rngs::StdRng::from_entropy();
    let text =
        serde_json::to_string(&session.job).map_err(|e| ClientError::Protocol(e.to_string()))?;
    for link in links {
        link.send_msg(&Message::Control(text.clone()))?;
    }
    for (name, shape, values) in &session.inputs {
        send_shared(links, name, shape, values, fp, &mut rng)?;
    }
    let shape = session.output_shape.clone();
    let mut supplied = Vec::new();
    let outputs = loop {
        let msgs = next_round(links)?;
        match &msgs[0] {
            Message::Control(first) => {
                let event: PartyEvent = serde_json::from_str(first).map_err(|e| {
                    ClientError::Protocol(format!("P0 sent an unknown message ({e}): {first}"))
                })?;
                if msgs.iter().any(|m| m != &msgs[0]) {
                    return Err(ClientError::Protocol(format!(
                        "the parties are out of step: {msgs:?}"
                    )));
                }
                match event {
                    PartyEvent::Step { step, total } => on_step(step, total),
                    PartyEvent::NeedNoise { t } => {
                        let z = noise.noise(&Plain, t, &shape)?;
                        send_shared(links, "noise", &shape, z.data(), fp, &mut rng)?;
                        supplied.push((t, z.into_vec()));
                    }
                }
            }
            Message::Shares { .. } => break msgs,
            Message::Error(_) => unreachable!("recv_msg turns errors into Err"),
        }
    };
    let mut parts = Vec::with_capacity(PARTIES);
    for (p, msg) in outputs.into_iter().enumerate() {
        let Message::Shares {
            name,
            shape: got,
            data,
        } = msg
        else {
            return Err(ClientError::Protocol(format!(
                "P{p} sent a control message where the others sent x_0"
            )));
        };
        if name != "x_0" || got != stacked(&shape) {
            return Err(ClientError::Protocol(format!(
                "P{p} sent shares {name:?} {got:?}, expected \"x_0\" {:?}",
                stacked(&shape)
            )));
        }
        let share = share_from_data(p, &shape, data).map_err(ClientError::Protocol)?;
        parts.push(OutputShare::of(&share));
    }
    let x0 = reconstruct(&parts).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let x0: Vec<f32> = fp
        .decode_slice(x0.data())
        .iter()
        .map(|&v| v as f32)
        .collect();
    let seconds = start.elapsed().as_secs_f64();
    let mut reports = Vec::with_capacity(PARTIES);
    for (p, msg) in next_round(links)?.into_iter().enumerate() {
        let Message::Control(text) = msg else {
            return Err(ClientError::Protocol(format!("P{p} sent no report")));
        };
        reports.push(
            serde_json::from_str::<PartyReport>(&text)
                .map_err(|e| ClientError::Protocol(format!("P{p}'s report: {e}")))?,
        );
    }
    Ok(ClientOutcome {
        x0,
        reports,
        seconds,
        noise: supplied,
    })
}

/// Noise replayed in the order it was supplied (the plaintext reference of an MPC run).
pub struct ReplayNoise {
    steps: std::collections::VecDeque<(usize, Vec<f32>)>,
}

impl ReplayNoise {
    pub fn new(noise: Vec<(usize, Vec<f32>)>) -> Self {
        ReplayNoise {
            steps: noise.into(),
        }
    }
}

impl NoiseSource<Plain> for ReplayNoise {
    fn noise(&mut self, _b: &Plain, t: usize, shape: &[usize]) -> nn::Result<PlainTensor> {
        match self.steps.pop_front() {
            Some((at, values)) if at == t => PlainTensor::new(shape, values),
            other => Err(nn::Error::Config(format!(
                "replayed noise out of order: wanted timestep {t}, have {:?}",
                other.map(|(at, _)| at)
            ))),
        }
    }
}
