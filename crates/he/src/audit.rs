//! The leakage audit's bookkeeping: recording what the server saw in a real session, turning each
//! source of leakage into reconstructions of x_t (at every step) and of x_0, and scoring them
//! against the client's true trajectory with PSNR and SSIM.
//!
//! Sources (what the server holds, and how it uses it):
//! - features: the split point's activations; inverting the client's layers (see
//!   [`crate::attack`]) gives x_t, and then x_0 = a * x_t + b * eps at the last step;
//! - plain part: z, the entries the split left unencrypted, with zeros elsewhere;
//! - noise rollout: x_T is almost exactly the first step's eps (alpha-bar_T ~ 0); rolling the
//!   DDIM update forward with the received eps gives a guess of every x_t and of x_0.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use nn::unet::{one_hot, SplitPoint};
use nn::{Plain, PlainTensor};

use crate::attack::{gauss_newton, AffineInverse};
use crate::ckks::{CkksContext, ClientKeys, Preset};
use crate::error::{Error, Result};
use crate::metrics::{psnr, ssim};
use crate::model::{LoadedModel, UNetHead, UNetServer};
use crate::protocol::{serve_session, HeClient, ServerView, SessionInfo, Tensor};
use crate::sampler::{sample, PlannedStep};
use crate::step::StepCoefficients;
use crate::wire::FramedStream;

/// What the server saw in one step, kept.
#[derive(Clone, Debug)]
pub struct RecordedStep {
    pub t: usize,
    pub coeff: StepCoefficients,
    pub features: Vec<Tensor>,
    pub encrypted_indices: Vec<u32>,
    pub plain_part: Vec<f32>,
    pub eps: Vec<f32>,
}

/// A session as the server saw it.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    pub session: Option<SessionInfo>,
    pub steps: Vec<RecordedStep>,
}

impl Recording {
    /// Records a step (pass as the server's observer).
    pub fn observe(&mut self, session: &SessionInfo, view: &ServerView) {
        if self.session.is_none() {
            self.session = Some(session.clone());
        }
        self.steps.push(RecordedStep {
            t: view.t,
            coeff: view.coeff,
            features: view.features.to_vec(),
            encrypted_indices: view.encrypted_indices.to_vec(),
            plain_part: view.plain_part.to_vec(),
            eps: view.eps.to_vec(),
        });
    }

    /// Mean fraction of entries sent in the clear.
    pub fn plain_fraction(&self) -> f64 {
        let f: f64 = self
            .steps
            .iter()
            .map(|s| {
                s.plain_part.len() as f64 / (s.plain_part.len() + s.encrypted_indices.len()) as f64
            })
            .sum();
        f / self.steps.len().max(1) as f64
    }
}

/// A server's guesses: x_t at each step where it made one (same indexing as the recording), and
/// x_0.
#[derive(Clone, Debug)]
pub struct Reconstruction {
    pub x_t: Vec<Option<Vec<f32>>>,
    pub x_0: Vec<f32>,
}

/// The last step applied to a guess of its input.
fn finish(rec: &Recording, last_input: &[f32]) -> Result<Vec<f32>> {
    let last = rec
        .steps
        .last()
        .ok_or_else(|| Error::Other("empty recording".into()))?;
    Ok(last.coeff.apply(last_input, &last.eps))
}

/// From the plaintext part: z where it was sent, 0 elsewhere.
pub fn from_plain_part(rec: &Recording) -> Result<Reconstruction> {
    let x_t: Vec<Option<Vec<f32>>> = rec
        .steps
        .iter()
        .map(|s| {
            let numel = s.plain_part.len() + s.encrypted_indices.len();
            let mut x = vec![0f32; numel];
            let mut enc = s.encrypted_indices.iter().peekable();
            let mut plain = s.plain_part.iter();
            for (i, v) in x.iter_mut().enumerate() {
                if enc.peek() == Some(&&(i as u32)) {
                    enc.next();
                } else if let Some(&z) = plain.next() {
                    *v = z;
                }
            }
            Some(x)
        })
        .collect();
    let last = x_t.last().cloned().flatten().unwrap_or_default();
    Ok(Reconstruction {
        x_0: finish(rec, &last)?,
        x_t,
    })
}

/// From the noise predictions alone: x_T ~ eps at the first step, then the DDIM recursion.
pub fn from_noise_rollout(rec: &Recording) -> Result<Reconstruction> {
    let first = rec
        .steps
        .first()
        .ok_or_else(|| Error::Other("empty recording".into()))?;
    let mut x = first.eps.clone();
    let mut x_t = Vec::with_capacity(rec.steps.len());
    for s in &rec.steps {
        x_t.push(Some(x.clone()));
        x = s.coeff.apply(&x, &s.eps);
    }
    Ok(Reconstruction { x_t, x_0: x })
}

/// Guesses the whole batch's x_t at step `i` from that step's features.
pub type Inverter<'a> = &'a mut dyn FnMut(usize, &[Tensor]) -> Result<Vec<f32>>;

/// From the features, with `invert(step, features) -> x_t guess` (whole batch) at the steps in
/// `at_steps` (all if `None`); x_0 from the guess at the last step, which must be among them.
pub fn from_features(
    rec: &Recording,
    at_steps: Option<&[usize]>,
    invert: Inverter,
) -> Result<Reconstruction> {
    let n = rec.steps.len();
    let mut x_t = vec![None; n];
    for (i, s) in rec.steps.iter().enumerate() {
        let wanted = match at_steps {
            Some(set) => set.contains(&i),
            None => true,
        };
        if wanted {
            x_t[i] = Some(invert(i, &s.features)?);
        }
    }
    let last = x_t
        .last()
        .cloned()
        .flatten()
        .ok_or_else(|| Error::Other("the last step must be reconstructed".into()))?;
    Ok(Reconstruction {
        x_0: finish(rec, &last)?,
        x_t,
    })
}

/// PSNR and SSIM of a reconstruction: x_t averaged over the reconstructed steps, x_0 at the end;
/// the data range of each comparison is the truth's own range (max - min), since HE mode samples
/// unclipped and x_0 can leave [-1, 1].
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Scores {
    pub psnr_x_t: f64,
    pub ssim_x_t: f64,
    pub psnr_x_0: f64,
    pub ssim_x_0: f64,
}

/// An exact reconstruction has infinite PSNR; values are capped here so averages stay finite.
pub const PSNR_CAP: f64 = 100.0;

/// `trajectory` is the client's [x_T, ..., x_0] (one more entry than steps).
pub fn score(trajectory: &[Vec<f32>], shape: &[usize], rec: &Reconstruction) -> Result<Scores> {
    if trajectory.len() != rec.x_t.len() + 1 {
        return Err(Error::Other(format!(
            "trajectory of {} states for {} steps",
            trajectory.len(),
            rec.x_t.len()
        )));
    }
    let range = |x: &[f32]| {
        let (lo, hi) = x
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        (hi - lo).max(1e-6) as f64
    };
    let (mut p, mut s, mut k) = (0.0, 0.0, 0usize);
    for (truth, guess) in trajectory.iter().zip(&rec.x_t) {
        if let Some(g) = guess {
            p += psnr(truth, g, range(truth))?.min(PSNR_CAP);
            s += ssim(truth, g, shape, range(truth))?;
            k += 1;
        }
    }
    let x0 = trajectory.last().expect("non-empty");
    Ok(Scores {
        psnr_x_t: p / k.max(1) as f64,
        ssim_x_t: s / k.max(1) as f64,
        psnr_x_0: psnr(x0, &rec.x_0, range(x0))?.min(PSNR_CAP),
        ssim_x_0: ssim(x0, &rec.x_0, shape, range(x0))?,
    })
}

/// A real HE session, as the client lived it and as the server saw it.
pub struct AuditSession {
    pub recording: Recording,
    /// The client's [x_T, ..., x_0].
    pub trajectory: Vec<Vec<f32>>,
}

/// Runs one HE session over loopback TCP with a server that records everything it sees.
pub fn record_session(
    model: &Arc<LoadedModel>,
    split: SplitPoint,
    threshold: f64,
    preset: Preset,
    x_start: &[f32],
    labels: &[usize],
    steps: &[PlannedStep],
) -> Result<AuditSession> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Network {
        peer: "loopback".into(),
        detail: format!("cannot listen: {e}"),
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Other(e.to_string()))?;
    let server_model = model.clone();
    let server = std::thread::spawn(move || -> Result<Recording> {
        let (stream, peer) = listener.accept().map_err(|e| Error::Network {
            peer: "loopback".into(),
            detail: format!("accept failed: {e}"),
        })?;
        let mut framed = FramedStream::new(stream, "client", peer);
        let mut recording = Recording::default();
        let tail = UNetServer::new(vec![server_model]);
        serve_session(
            &mut framed,
            &tail,
            Some(&mut |s: &SessionInfo, v: &ServerView| recording.observe(s, v)),
        )?;
        Ok(recording)
    });
    let client_side = (|| -> Result<Vec<Vec<f32>>> {
        let session = model.session(split, labels, labels.len().max(1));
        let head = UNetHead::new(model.clone(), session.clone())?;
        let keys = ClientKeys::generate(&CkksContext::from_preset(preset)?)?;
        let stream = crate::tcp::connect(&addr.to_string(), Duration::from_secs(300))?;
        let mut client = HeClient::open(stream, keys, session, threshold)?;
        let trajectory = sample(
            &mut client,
            &head,
            x_start.to_vec(),
            steps,
            &mut |_| Err(Error::Other("the audit runs deterministic DDIM".into())),
            &mut |_| {},
        )?;
        client.close()?;
        Ok(trajectory)
    })();
    let recording = server
        .join()
        .map_err(|_| Error::Other("the recording server panicked".into()))?;
    let trajectory = client_side?;
    Ok(AuditSession {
        recording: recording?,
        trajectory,
    })
}

/// The server's inversions of the client's head for one model and batch.
pub struct HeadInverter {
    model: Arc<LoadedModel>,
    labels: Vec<usize>,
    /// Least-squares inverse of the stem convolution (affine: x -> conv(x) + bias), shared by
    /// all samples and steps.
    stem: AffineInverse,
    sample_len: usize,
}

impl HeadInverter {
    pub fn new(model: Arc<LoadedModel>, labels: &[usize]) -> Result<HeadInverter> {
        let [c, h, w] = model.dir.image_shape();
        let sample_len = c * h * w;
        let stem = {
            let head = head_fn(&model, SplitPoint { down_blocks: 0 }, 0, None);
            AffineInverse::new(&head, sample_len, 0.0)?
        };
        Ok(HeadInverter {
            model,
            labels: labels.to_vec(),
            stem,
            sample_len,
        })
    }

    /// x_t of the whole batch from the stem's output (the first activation of every split
    /// point: a U-Net's first skip connection), by least squares.
    pub fn from_stem(&self, features: &[Tensor]) -> Result<Vec<f32>> {
        let stem = features
            .first()
            .ok_or_else(|| Error::Other("no features".into()))?;
        let n = self.labels.len().max(1);
        let per = stem.data.len() / n;
        let mut x = Vec::with_capacity(n * self.sample_len);
        for s in 0..n {
            x.extend(self.stem.solve(&stem.data[s * per..(s + 1) * per])?);
        }
        Ok(x)
    }

    /// x_t of the whole batch from the deepest activation alone (as if the skip connections were
    /// withheld), by Gauss-Newton against the known weights.
    pub fn from_deepest(
        &self,
        split: SplitPoint,
        t: usize,
        features: &[Tensor],
        iters: usize,
    ) -> Result<Vec<f32>> {
        let deepest = features
            .last()
            .ok_or_else(|| Error::Other("no features".into()))?;
        let n = self.labels.len().max(1);
        let per = deepest.data.len() / n;
        let mut x = Vec::with_capacity(n * self.sample_len);
        for s in 0..n {
            let label = self.labels.get(s).copied();
            let head = head_fn(&self.model, split, t, label);
            let (xs, _) = gauss_newton(
                &head,
                &deepest.data[s * per..(s + 1) * per],
                &vec![0.0; self.sample_len],
                iters,
            )?;
            x.extend(xs);
        }
        Ok(x)
    }
}

/// The head of `model` at `split` as a batched map from single images to their deepest
/// activation, at timestep `t` with class `label` for every image of the batch.
fn head_fn(
    model: &Arc<LoadedModel>,
    split: SplitPoint,
    t: usize,
    label: Option<usize>,
) -> impl Fn(&[f32], usize) -> Result<Vec<f32>> + '_ {
    move |x: &[f32], batch: usize| {
        let [c, h, w] = model.dir.image_shape();
        let xs = PlainTensor::new(&[batch, c, h, w], x.to_vec())?;
        let labels = match (model.dir.config.unet.num_classes, label) {
            (Some(k), Some(l)) => {
                let hot = one_hot(&vec![l; batch], k)
                    .ok_or_else(|| Error::Other(format!("label {l} outside {k} classes")))?;
                Some(PlainTensor::new(&[batch, k], hot)?)
            }
            _ => None,
        };
        let acts = model
            .unet
            .forward_head(&Plain, &xs, &vec![t; batch], labels.as_ref(), split)?;
        Ok(acts.last().expect("at least the stem").data().to_vec())
    }
}
