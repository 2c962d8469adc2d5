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

use crate::error::{Error, Result};
use crate::metrics::{psnr, ssim};
use crate::protocol::{ServerView, SessionInfo, Tensor};
use crate::step::StepCoefficients;

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

/// PSNR and SSIM of a reconstruction: x_t averaged over the reconstructed steps (data range =
/// the true x_t's range at that step), x_0 with data range 2 (images live in [-1, 1]).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Scores {
    pub psnr_x_t: f64,
    pub ssim_x_t: f64,
    pub psnr_x_0: f64,
    pub ssim_x_0: f64,
}

/// `trajectory` is the client's [x_T, ..., x_0] (one more entry than steps).
pub fn score(trajectory: &[Vec<f32>], shape: &[usize], rec: &Reconstruction) -> Result<Scores> {
    if trajectory.len() != rec.x_t.len() + 1 {
        return Err(Error::Other(format!(
            "trajectory of {} states for {} steps",
            trajectory.len(),
            rec.x_t.len()
        )));
    }
    let (mut p, mut s, mut k) = (0.0, 0.0, 0usize);
    for (truth, guess) in trajectory.iter().zip(&rec.x_t) {
        if let Some(g) = guess {
            let (lo, hi) = truth
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                    (l.min(v), h.max(v))
                });
            let range = (hi - lo).max(1e-6) as f64;
            // An exact reconstruction has infinite PSNR; cap it so averages stay finite.
            p += psnr(truth, g, range)?.min(100.0);
            s += ssim(truth, g, shape, range)?;
            k += 1;
        }
    }
    let x0 = trajectory.last().expect("non-empty");
    Ok(Scores {
        psnr_x_t: p / k.max(1) as f64,
        ssim_x_t: s / k.max(1) as f64,
        psnr_x_0: psnr(x0, &rec.x_0, 2.0)?.min(100.0),
        ssim_x_0: ssim(x0, &rec.x_0, shape, 2.0)?,
    })
}
