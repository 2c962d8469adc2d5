//! The client's sampling loop in HE mode: one protocol step per denoising step, DDPM's noise added
//! by the client after decryption. Every step is linear in x_t (no x0 clipping), as in
//! HE-Diffusion.

use std::io::{Read, Write};

use diffusion::{Sampler, Schedule};

use crate::error::{Error, Result};
use crate::protocol::{ClientModel, HeClient};
use crate::step::StepCoefficients;

/// One denoising step as the client plans it: the U-Net's timestep, the update's coefficients,
/// and the standard deviation of the noise the client adds afterwards (0 for DDIM).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlannedStep {
    pub t: usize,
    pub coeff: StepCoefficients,
    pub noise_std: f64,
}

/// The steps `sampler` takes on `schedule`, with the same coefficients as the plaintext sampler
/// (diffusion crate) but without x0 clipping, which a linear update cannot do: DDIM (any eta; the
/// last step targets alpha-bar[0], as CipherDM's) and ancestral DDPM (sigma_t^2 = beta_t).
pub fn plan(sampler: &Sampler, schedule: &Schedule) -> Result<Vec<PlannedStep>> {
    let ts = sampler.timesteps(schedule)?;
    let ab = |t: usize| schedule.alpha_bars[t] as f64;
    Ok(match sampler {
        Sampler::Ddim(cfg) => ts
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let prev = ts.get(i + 1).copied().unwrap_or(0);
                let (ab_t, ab_prev) = (ab(t), ab(prev));
                let eta = cfg.eta as f64;
                let sigma = eta * ((1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev)).sqrt();
                let direction = (1.0 - ab_prev - sigma * sigma).max(0.0).sqrt();
                let a = (ab_prev / ab_t).sqrt();
                PlannedStep {
                    t,
                    coeff: StepCoefficients {
                        a,
                        b: direction - a * (1.0 - ab_t).sqrt(),
                    },
                    noise_std: sigma,
                }
            })
            .collect(),
        Sampler::Ddpm => ts
            .iter()
            .map(|&t| {
                let beta = schedule.betas[t] as f64;
                PlannedStep {
                    t,
                    coeff: StepCoefficients::ddpm_mean(beta, ab(t)),
                    noise_std: if t > 0 { beta.sqrt() } else { 0.0 },
                }
            })
            .collect(),
    })
}

/// Runs `plan` from x_T. `noise(t)` gives the standard-normal draw added after the step at
/// timestep `t` (asked only when that step's `noise_std` > 0, in the plaintext sampler's order,
/// so the same noise source gives the same trajectory); `progress(i)` is called after step `i`. Returns the
/// trajectory [x_T, ..., x_0] (the audit compares the server's reconstructions with it).
pub fn sample<S: Read + Write>(
    client: &mut HeClient<S>,
    model: &dyn ClientModel,
    x_start: Vec<f32>,
    plan: &[PlannedStep],
    noise: &mut dyn FnMut(usize) -> Result<Vec<f32>>,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Vec<f32>>> {
    let mut trajectory = Vec::with_capacity(plan.len() + 1);
    let mut x = x_start;
    for (i, step) in plan.iter().enumerate() {
        let mut next = client.step(model, &x, step.t, step.coeff)?;
        if step.noise_std > 0.0 {
            let n = noise(step.t)?;
            if n.len() != next.len() {
                return Err(Error::shape(
                    "ddpm noise",
                    format!("{} values for a latent of {}", n.len(), next.len()),
                ));
            }
            for (v, e) in next.iter_mut().zip(n) {
                *v += (step.noise_std * e as f64) as f32;
            }
        }
        trajectory.push(std::mem::replace(&mut x, next));
        progress(i);
    }
    trajectory.push(x);
    Ok(trajectory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffusion::{BetaSchedule, DdimConfig, SeededNoise, Spacing};
    use nn::{Plain, PlainTensor};

    /// A made-up denoiser, deterministic in (x, t).
    fn denoise(x: &[f32], t: usize) -> Vec<f32> {
        x.iter()
            .enumerate()
            .map(|(i, v)| 0.3 * v + ((i + t) as f32 * 0.1).sin())
            .collect()
    }

    /// The plan, applied in plaintext with the plaintext sampler's noise, reproduces the
    /// diffusion crate's sampler (unclipped) step for step: DDPM, DDIM eta 0 and eta 0.5.
    #[test]
    fn plans_reproduce_the_plaintext_samplers() {
        let schedule = BetaSchedule::Linear {
            timesteps: 1000,
            beta_start: 1e-4,
            beta_end: 0.02,
        }
        .build()
        .unwrap();
        let ddim = |eta| {
            Sampler::Ddim(DdimConfig {
                steps: 25,
                eta,
                spacing: Spacing::Uniform,
                clip_x0: false,
            })
        };
        let x_t: Vec<f32> = (0..8).map(|i| (i as f32 - 3.5) / 2.0).collect();
        for sampler in [Sampler::Ddpm, ddim(0.0), ddim(0.5)] {
            let b = Plain;
            let want = sampler
                .sample(
                    &b,
                    &schedule,
                    PlainTensor::new(&[1, 2, 2, 2], x_t.clone()).unwrap(),
                    |x, t| PlainTensor::new(&[1, 2, 2, 2], denoise(x.data(), t)),
                    &mut SeededNoise::new(7),
                    |_| {},
                )
                .unwrap();
            let mut noise = SeededNoise::new(7);
            let mut x = x_t.clone();
            for step in plan(&sampler, &schedule).unwrap() {
                x = step.coeff.apply(&x, &denoise(&x, step.t));
                if step.noise_std > 0.0 {
                    let n: PlainTensor = diffusion::NoiseSource::<Plain>::noise(
                        &mut noise,
                        &b,
                        step.t,
                        &[1, 2, 2, 2],
                    )
                    .unwrap();
                    for (v, e) in x.iter_mut().zip(n.data()) {
                        *v += (step.noise_std * *e as f64) as f32;
                    }
                }
            }
            let err = x
                .iter()
                .zip(want.data())
                .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
                .fold(0.0, f32::max);
            assert!(err < 1e-3, "{}: relative error {err}", sampler.name());
        }
    }
}
