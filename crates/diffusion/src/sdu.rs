//! PIDM's score distillation from unconditional generation (SDU, Algorithm 1 of "Secure
//! diffusion model unlocked"): the secure, conditional sampler takes few DDIM steps, and each of
//! its noise predictions is pulled towards the noise that an unconditional trajectory with more
//! steps, run in the clear from the same x_T, implies for the same jump.
//!
//! Who computes what: the unconditional trajectory needs x_T (the client's secret) and the model
//! in the clear, so the *client* runs it ([`sdu_targets`]), which it can only do when it holds the
//! weights (public weights, or the client is the model owner). The per-step targets ε_SDU depend
//! on x_T, so they are secret too: under MPC the client shares them like x_T, and the correction
//! is linear on shares (a difference, a public scaling and a sum per step; [`SduTargets`]).
//!
//! The targets. Conditional steps visit t_0 > t_1 > ... > t_{K-1} and the last one lands on
//! alpha_bar[0] (t_K = 0, as [`crate::Sampler`] does). The unconditional trajectory starts from x_T
//! at t_0, the same time as the conditional one (the paper's z_T = ẑ_T), and splits each
//! conditional jump t_k -> t_{k+1} into `refine` DDIM steps (eta 0) at evenly spaced timesteps in
//! between (fewer where the jump is shorter: the last one, t = 1 -> 0, is a single step). With
//! z_k its state at t_k, ε_SDU(k) is the ε for which *one* DDIM step from z_k lands on z_{k+1}
//! (the paper's "reverse engineering" of eq. 9, written for DDIM as its section 3.2 says it can be):
//!
//!   z_{k+1} = sqrt(a'/a) (z_k - sqrt(1 - a) ε) + sqrt(1 - a') ε,   a = alpha_bar[t_k], a' = alpha_bar[t_{k+1}]
//!   =>  ε_SDU(k) = (z_{k+1} - sqrt(a'/a) z_k) / (sqrt(1 - a') - sqrt(a' (1 - a) / a)).
//!
//! The correction (eq. 10; Algorithm 1, line 10), once per conditional step:
//!   ε_cfg <- ε_cfg - η w(t) (ε_cond - ε_SDU),   w(t) = α_t / σ_t,  α_t = 1 - β_t,  σ_t = sqrt(1 - α_t²)
//! with the paper's η = 0.02 and weighting; ε_cond is the conditional branch's own prediction.

use nn::{Backend, Plain, PlainTensor};

use crate::sampler::ddim_step;
use crate::{sd_ddim, Error, Result, Sampler, Schedule, SeededNoise, TextToImage};

/// SDU's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sdu {
    /// The learning rate η (the paper: 0.02).
    pub eta: f32,
    /// Unconditional DDIM steps per conditional step (the paper: 50 unconditional steps for 10
    /// conditional ones, i.e. 5).
    pub refine: usize,
}

impl Default for Sdu {
    fn default() -> Self {
        Sdu {
            eta: 0.02,
            refine: 5,
        }
    }
}

impl Sdu {
    pub fn check(&self) -> Result<()> {
        if !(self.eta.is_finite() && self.eta >= 0.0) {
            return Err(Error::Inputs(format!(
                "the SDU learning rate must be a non-negative number, got {}",
                self.eta
            )));
        }
        if self.refine == 0 {
            return Err(Error::Inputs(
                "SDU needs at least one unconditional step per conditional step".into(),
            ));
        }
        Ok(())
    }
}

/// The weight w(t) = α_t / σ_t of the correction at timestep t (module docs).
pub fn sdu_weight(schedule: &Schedule, t: usize) -> f32 {
    let alpha = schedule.alphas[t] as f64;
    (alpha / (1.0 - alpha * alpha).sqrt()) as f32
}

/// The unconditional trajectory's timesteps for the conditional ones `cond` (descending, the
/// last step landing on 0): each jump t_k -> t_{k+1} split into at most `refine` steps at
/// timesteps t_k - floor(j (t_k - t_{k+1}) / refine), j = 0..refine, without repeats.
pub fn refined_timesteps(cond: &[usize], refine: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for (k, &t) in cond.iter().enumerate() {
        let next = cond.get(k + 1).copied().unwrap_or(0);
        let gap = t.saturating_sub(next);
        for j in 0..refine.max(1) {
            let s = t - j * gap / refine.max(1);
            if out.last() != Some(&s) && (s > next || j == 0) {
                out.push(s);
            }
        }
    }
    out
}

/// The ε of one DDIM step from `z` (at alpha_bar `a`) that lands on `z_next` (at `a_next`).
pub fn reverse_ddim(z: &[f32], z_next: &[f32], a: f64, a_next: f64) -> Result<Vec<f32>> {
    let ratio = (a_next / a).sqrt();
    let denom = (1.0 - a_next).sqrt() - (a_next * (1.0 - a) / a).sqrt();
    if denom.abs() < 1e-9 || a_next <= a {
        return Err(Error::Inputs(format!(
            "cannot reverse a DDIM step from alpha_bar {a} to {a_next}: the step must move to a \
             larger alpha_bar"
        )));
    }
    Ok(z.iter()
        .zip(z_next)
        .map(|(&z, &n)| ((n as f64 - ratio * z as f64) / denom) as f32)
        .collect())
}

/// ε_SDU for each of the `cond_steps` conditional DDIM steps of `pipe` (Stable Diffusion's DDIM,
/// as [`TextToImage::sample_from`] runs it) from x_T, each of x_T's shape: the client's side of
/// SDU, in the clear (module docs). `on_step(i, total)` after each unconditional step.
pub fn sdu_targets(
    pipe: &TextToImage<Plain>,
    x_t: &PlainTensor,
    cond_steps: usize,
    sdu: Sdu,
    mut on_step: impl FnMut(usize, usize),
) -> Result<Vec<PlainTensor>> {
    sdu.check()?;
    let b = &Plain;
    let schedule = &pipe.schedule;
    // The conditional sampler's DDIM, stepped at the refined timesteps.
    let sampler = sd_ddim(cond_steps);
    let Sampler::Ddim(ddim) = &sampler else {
        unreachable!("Stable Diffusion's sampler is DDIM")
    };
    let cond = sampler.timesteps(schedule)?;
    let steps = refined_timesteps(&cond, sdu.refine);
    let mut no_noise = SeededNoise::new(0);
    let shape = x_t.shape().to_vec();
    let n = shape[0];
    let empty = vec![String::new(); n];
    let uncond = pipe.text_encoder.forward(b, &pipe.tokens(b, &empty)?)?;
    let alpha_bar = |t: usize| schedule.alpha_bars[t] as f64;

    // The states z_k at the conditional timesteps, then the final one.
    let mut states = Vec::with_capacity(cond.len() + 1);
    let mut z = x_t.clone();
    for (i, &t) in steps.iter().enumerate() {
        if cond.contains(&t) {
            states.push(z.data().to_vec());
        }
        let eps = pipe.unet.forward(b, &z, &vec![t as f32; n], &uncond)?;
        let prev = steps.get(i + 1).copied().unwrap_or(0);
        z = ddim_step(b, schedule, ddim, &z, &eps, t, prev, &mut no_noise)?;
        on_step(i + 1, steps.len());
    }
    states.push(z.into_vec());
    cond.iter()
        .enumerate()
        .map(|(k, &t)| {
            let next = cond.get(k + 1).copied().unwrap_or(0);
            let eps = reverse_ddim(&states[k], &states[k + 1], alpha_bar(t), alpha_bar(next))?;
            Ok(PlainTensor::new(&shape, eps)?)
        })
        .collect()
}

/// The targets on a backend (under MPC: the client's shares), one per conditional step, and η.
pub struct SduTargets<B: Backend> {
    pub eta: f32,
    pub eps: Vec<B::Tensor>,
}

impl<B: Backend> SduTargets<B> {
    /// Public targets (plaintext backends, and tests).
    pub fn public(b: &B, eta: f32, targets: &[PlainTensor]) -> Result<Self> {
        let eps = targets
            .iter()
            .map(|t| b.public(t.shape(), t.data()))
            .collect::<nn::Result<_>>()?;
        Ok(SduTargets { eta, eps })
    }

    /// Checks that there is one target of x_T's shape per step.
    pub fn check(&self, b: &B, steps: usize, latent: &[usize]) -> Result<()> {
        if self.eps.len() != steps {
            return Err(Error::Inputs(format!(
                "{} SDU targets for {steps} steps",
                self.eps.len()
            )));
        }
        if let Some(bad) = self.eps.iter().find(|e| b.shape(e) != latent) {
            return Err(Error::Inputs(format!(
                "an SDU target of shape {:?} for latents of shape {latent:?}",
                b.shape(bad)
            )));
        }
        Ok(())
    }

    /// Conditional step `k` (at timestep t): ε_cfg - η w(t) (ε_cond - ε_SDU(k)).
    pub fn correct(
        &self,
        b: &B,
        schedule: &Schedule,
        (k, t): (usize, usize),
        eps_cfg: &B::Tensor,
        eps_cond: &B::Tensor,
    ) -> Result<B::Tensor> {
        let target = self.eps.get(k).ok_or_else(|| {
            Error::Inputs(format!("no SDU target for step {k} ({})", self.eps.len()))
        })?;
        let pull = self.eta * sdu_weight(schedule, t);
        let gap = b.sub(eps_cond, target)?;
        Ok(b.sub(eps_cfg, &b.scale(&gap, pull)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refined_timesteps_split_each_jump() {
        // Stable Diffusion's 10-step DDIM: 901, 801, ..., 1, then alpha_bar[0].
        let cond: Vec<usize> = (0..10).rev().map(|i| i * 100 + 1).collect();
        let r = refined_timesteps(&cond, 5);
        assert_eq!(&r[..6], &[901, 881, 861, 841, 821, 801]);
        // 9 jumps of 100 in 5 steps each, then the last jump (1 -> 0) in one.
        assert_eq!(r.len(), 46);
        assert_eq!(*r.last().unwrap(), 1);
        assert!(r.windows(2).all(|w| w[0] > w[1]));
        for t in &cond {
            assert!(r.contains(t));
        }
        assert_eq!(refined_timesteps(&cond, 1), cond);
        // A jump shorter than `refine` is split into unit steps.
        assert_eq!(refined_timesteps(&[4, 1], 5), vec![4, 3, 2, 1]);
    }

    /// One deterministic DDIM step from alpha_bar `a` to `a_prev`, written out in f64.
    fn ddim_step(x: &[f32], eps: &[f32], a: f64, a_prev: f64) -> Vec<f32> {
        x.iter()
            .zip(eps)
            .map(|(&x, &e)| {
                let (x, e) = (x as f64, e as f64);
                let x0 = (x - (1.0 - a).sqrt() * e) / a.sqrt();
                (a_prev.sqrt() * x0 + (1.0 - a_prev).sqrt() * e) as f32
            })
            .collect()
    }

    #[test]
    fn reversing_a_ddim_step_recovers_its_noise() {
        let z = [0.3f32, -1.2, 2.5, 0.0];
        let eps = [0.9f32, 0.1, -1.4, 0.5];
        for (a, a_next) in [(0.05, 0.2), (0.5, 0.9), (0.9, 0.99915)] {
            let next = ddim_step(&z, &eps, a, a_next);
            let back = reverse_ddim(&z, &next, a, a_next).unwrap();
            for (g, w) in back.iter().zip(&eps) {
                assert!((g - w).abs() < 1e-4, "{a} -> {a_next}: {g} vs {w}");
            }
        }
        assert!(reverse_ddim(&z, &z, 0.5, 0.5).is_err());
        assert!(reverse_ddim(&z, &z, 0.6, 0.5).is_err());
    }

    #[test]
    fn the_weight_is_alpha_over_sigma() {
        let s = Schedule::from_betas(vec![0.00085, 0.012]).unwrap();
        let w0 = sdu_weight(&s, 0) as f64;
        let a = 1.0 - 0.00085f64;
        assert!((w0 - a / (1.0 - a * a).sqrt()).abs() < 1e-2 * w0);
        assert!(sdu_weight(&s, 1) < sdu_weight(&s, 0));
    }

    #[test]
    fn the_correction_pulls_towards_the_target() {
        let b = Plain;
        let s = Schedule::from_betas(vec![0.01; 4]).unwrap();
        let t = |v: f32| PlainTensor::new(&[1, 1, 1, 2], vec![v, -v]).unwrap();
        let targets = SduTargets::public(&b, 0.02, &[t(1.0)]).unwrap();
        assert!(targets.check(&b, 1, &[1, 1, 1, 2]).is_ok());
        assert!(targets.check(&b, 2, &[1, 1, 1, 2]).is_err());
        assert!(targets.check(&b, 1, &[1, 1, 2, 1]).is_err());
        let out = targets.correct(&b, &s, (0, 2), &t(0.5), &t(0.0)).unwrap();
        let pull = 0.02 * sdu_weight(&s, 2);
        assert!((out.data()[0] - (0.5 + pull)).abs() < 1e-6);
        assert!(targets.correct(&b, &s, (1, 2), &t(0.5), &t(0.0)).is_err());
    }
}
