//! The client's sampling loop in HE mode: one protocol step per denoising step, DDPM's noise added
//! by the client after decryption. Every step is linear in x_t (no x0 clipping), as in
//! HE-Diffusion.

use std::io::{Read, Write};

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

/// DDIM (eta 0) over `timesteps` (descending) with alpha-bars `abar` indexed by timestep; the
/// step from `timesteps[i]` goes to `timesteps[i + 1]`, and the last one to `final_prev` (the
/// reference sampler's "previous of 1 is 0"; `None` means alpha-bar 1, i.e. straight to x0).
pub fn ddim_plan(
    abar: &[f64],
    timesteps: &[usize],
    final_prev: Option<usize>,
) -> Result<Vec<PlannedStep>> {
    let at = |t: usize| {
        abar.get(t).copied().ok_or_else(|| {
            Error::Other(format!(
                "timestep {t} outside the {}-step schedule",
                abar.len()
            ))
        })
    };
    let mut plan = Vec::with_capacity(timesteps.len());
    for (i, &t) in timesteps.iter().enumerate() {
        let prev = match timesteps.get(i + 1) {
            Some(&p) => at(p)?,
            None => match final_prev {
                Some(p) => at(p)?,
                None => 1.0,
            },
        };
        plan.push(PlannedStep {
            t,
            coeff: StepCoefficients::ddim(at(t)?, prev),
            noise_std: 0.0,
        });
    }
    Ok(plan)
}

/// Ancestral DDPM over every timestep from the last down to 0: posterior mean (by the server)
/// plus sigma_t * n (by the client) for t > 0, with sigma_t^2 = `variances[t]`.
pub fn ddpm_plan(betas: &[f64], abar: &[f64], variances: &[f64]) -> Result<Vec<PlannedStep>> {
    if betas.len() != abar.len() || betas.len() != variances.len() {
        return Err(Error::Other("schedule arrays of different lengths".into()));
    }
    Ok((0..betas.len())
        .rev()
        .map(|t| PlannedStep {
            t,
            coeff: StepCoefficients::ddpm_mean(betas[t], abar[t]),
            noise_std: if t > 0 { variances[t].sqrt() } else { 0.0 },
        })
        .collect())
}

/// Runs `plan` from x_T. `noise(i)` gives the standard-normal draw added after step `i` (asked
/// only when that step's `noise_std` > 0); `progress(i)` is called after each step. Returns the
/// trajectory [x_T, ..., x_0] (the audit compares the server's reconstructions with it).
pub fn sample<S: Read + Write>(
    client: &mut HeClient<S>,
    model: &dyn ClientModel,
    x_start: Vec<f32>,
    plan: &[PlannedStep],
    noise: &mut dyn FnMut(usize) -> Vec<f32>,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Vec<f32>>> {
    let mut trajectory = Vec::with_capacity(plan.len() + 1);
    let mut x = x_start;
    for (i, step) in plan.iter().enumerate() {
        let mut next = client.step(model, &x, step.t, step.coeff)?;
        if step.noise_std > 0.0 {
            let n = noise(i);
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
