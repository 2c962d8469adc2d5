//! DDIM and ancestral DDPM, exactly as CipherDM's `sample_ddim` and `sample` define them, generic
//! over the backend. Each step is: one denoiser call, then scalings and sums with public
//! coefficients (plus DDIM's optional clamp), so under MPC a step costs the denoiser and a clamp.

use nn::Backend;
use serde::{Deserialize, Serialize};

use crate::{Error, NoiseSource, Result, Schedule};

/// How DDIM picks its timesteps out of the schedule's T.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Spacing {
    /// Every (T / steps)-th timestep: 1, 1 + c, 1 + 2c, ... (CipherDM's `uniform`; also
    /// diffusers' "leading" spacing with `steps_offset = 1`, as Stable Diffusion uses it).
    Uniform,
    /// floor(linspace(0, sqrt(0.8 T), steps)^2) + 1 (CipherDM's `quad`).
    Quadratic,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DdimConfig {
    pub steps: usize,
    /// 0: deterministic DDIM; 1: DDPM-like variance.
    pub eta: f32,
    pub spacing: Spacing,
    /// Clip the predicted x0 to [-1, 1] before stepping (CipherDM's `clip_denoised`).
    pub clip_x0: bool,
}

impl Default for DdimConfig {
    fn default() -> Self {
        DdimConfig {
            steps: 50,
            eta: 0.0,
            spacing: Spacing::Uniform,
            clip_x0: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Sampler {
    Ddim(DdimConfig),
    /// Ancestral sampling over every timestep T-1, ..., 0.
    Ddpm,
}

/// Progress report after each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepInfo {
    /// Steps completed so far (1 after the first).
    pub done: usize,
    pub total: usize,
    /// The timestep this step denoised.
    pub t: usize,
}

impl Sampler {
    pub fn name(&self) -> &'static str {
        match self {
            Sampler::Ddim(_) => "ddim",
            Sampler::Ddpm => "ddpm",
        }
    }

    /// The timesteps the sampler visits, in order (descending). Fails if the schedule cannot
    /// take this many steps.
    pub fn timesteps(&self, schedule: &Schedule) -> Result<Vec<usize>> {
        let mut ts = match self {
            Sampler::Ddpm => (0..schedule.len()).collect(),
            Sampler::Ddim(cfg) => ddim_timesteps(cfg, schedule.len())?,
        };
        ts.reverse();
        Ok(ts)
    }

    /// Runs the sampler from `x_t` (pure noise at the first timestep) to x_0.
    ///
    /// `denoise(x, t)` predicts the noise in `x` at timestep `t`; `noise` supplies the fresh noise
    /// of stochastic steps; `on_step` is told after every step (a progress bar).
    pub fn sample<B, F>(
        &self,
        b: &B,
        schedule: &Schedule,
        x_t: B::Tensor,
        mut denoise: F,
        noise: &mut dyn NoiseSource<B>,
        mut on_step: impl FnMut(StepInfo),
    ) -> Result<B::Tensor>
    where
        B: Backend,
        F: FnMut(&B::Tensor, usize) -> nn::Result<B::Tensor>,
    {
        let ts = self.timesteps(schedule)?;
        let shape = b.shape(&x_t);
        let mut x = x_t;
        for (i, &t) in ts.iter().enumerate() {
            let eps = denoise(&x, t)?;
            if b.shape(&eps) != shape {
                return Err(nn::Error::shape(
                    "sampler",
                    format!("denoiser returned {:?} for input {shape:?}", b.shape(&eps)),
                )
                .into());
            }
            x = match self {
                Sampler::Ddpm => ddpm_step(b, schedule, &x, &eps, t, noise)?,
                Sampler::Ddim(cfg) => {
                    // The previous timestep of the last (smallest) one is 0, as in CipherDM:
                    // the final update targets alpha_bar[0], not 1.
                    let prev = ts.get(i + 1).copied().unwrap_or(0);
                    ddim_step(b, schedule, cfg, &x, &eps, t, prev, noise)?
                }
            };
            on_step(StepInfo {
                done: i + 1,
                total: ts.len(),
                t,
            });
        }
        Ok(x)
    }
}

/// CipherDM's DDIM timestep sequence (ascending), with its quirks kept: `uniform` takes the first
/// `steps` entries of arange(0, T, T / steps) plus one, `quad` truncates float32 squares.
fn ddim_timesteps(cfg: &DdimConfig, total: usize) -> Result<Vec<usize>> {
    let steps = cfg.steps;
    let fail = |reason: String| Err(Error::Steps { steps, reason });
    if steps == 0 {
        return fail("at least one step is needed".into());
    }
    if !(cfg.eta.is_finite() && cfg.eta >= 0.0) {
        return Err(Error::Steps {
            steps,
            reason: format!("eta must be a non-negative number, got {}", cfg.eta),
        });
    }
    let ts: Vec<usize> = match cfg.spacing {
        Spacing::Uniform => {
            if steps > total {
                return fail(format!("the schedule has only {total} timesteps"));
            }
            let stride = total / steps;
            (0..steps).map(|i| i * stride + 1).collect()
        }
        Spacing::Quadratic => {
            // jnp.linspace(0, sqrt(0.8 T), steps) in float32, squared, truncated, plus one.
            let stop = ((total as f64 * 0.8) as f32).sqrt();
            let div = (steps.max(2) - 1) as f32;
            (0..steps)
                .map(|i| {
                    let v = if i + 1 == steps && steps > 1 {
                        stop
                    } else {
                        stop * (i as f32 / div)
                    };
                    (v * v) as usize + 1
                })
                .collect()
        }
    };
    // Quadratic spacing repeats small timesteps when steps is large (50 steps start 1, 1, 2):
    // CipherDM runs those steps anyway (each is the identity up to clipping), and so do we.
    if let Some(&last) = ts.last() {
        if last >= total {
            return fail(format!(
                "timestep {last} is past the schedule's last timestep {}",
                total - 1
            ));
        }
    }
    Ok(ts)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn ddim_step<B: Backend>(
    b: &B,
    schedule: &Schedule,
    cfg: &DdimConfig,
    x: &B::Tensor,
    eps: &B::Tensor,
    t: usize,
    prev: usize,
    noise: &mut dyn NoiseSource<B>,
) -> Result<B::Tensor> {
    let ab_t = schedule.alpha_bars[t];
    let ab_prev = schedule.alpha_bars[prev];
    // pred_x0 = (x - sqrt(1 - ab_t) eps) / sqrt(ab_t)
    let x0 = b.scale(
        &b.sub(x, &b.scale(eps, (1.0 - ab_t).sqrt())?)?,
        1.0 / ab_t.sqrt(),
    )?;
    let x0 = if cfg.clip_x0 {
        b.clamp(&x0, -1.0, 1.0)?
    } else {
        x0
    };
    let sigma = cfg.eta * ((1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev)).sqrt();
    let direction = (1.0 - ab_prev - sigma * sigma).max(0.0).sqrt();
    let x_prev = b.add(&b.scale(&x0, ab_prev.sqrt())?, &b.scale(eps, direction)?)?;
    if sigma > 0.0 {
        let z = noise.noise(b, t, &b.shape(x))?;
        Ok(b.add(&x_prev, &b.scale(&z, sigma)?)?)
    } else {
        Ok(x_prev)
    }
}

fn ddpm_step<B: Backend>(
    b: &B,
    schedule: &Schedule,
    x: &B::Tensor,
    eps: &B::Tensor,
    t: usize,
    noise: &mut dyn NoiseSource<B>,
) -> Result<B::Tensor> {
    let beta = schedule.betas[t];
    // CipherDM: (x - beta / sqrt(1 - ab_t) eps) * sqrt(1 / alpha_t), then + sqrt(beta) z if t > 0.
    let remove_noise = beta / (1.0 - schedule.alpha_bars[t]).sqrt();
    let mean = b.scale(
        &b.sub(x, &b.scale(eps, remove_noise)?)?,
        (1.0 / schedule.alphas[t]).sqrt(),
    )?;
    if t == 0 {
        return Ok(mean);
    }
    let z = noise.noise(b, t, &b.shape(x))?;
    Ok(b.add(&mean, &b.scale(&z, beta.sqrt())?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BetaSchedule;
    use nn::{Plain, PlainTensor};

    fn linear() -> Schedule {
        BetaSchedule::Linear {
            timesteps: 1000,
            beta_start: 1e-4,
            beta_end: 0.02,
        }
        .build()
        .unwrap()
    }

    fn ddim(steps: usize, spacing: Spacing) -> Sampler {
        Sampler::Ddim(DdimConfig {
            steps,
            spacing,
            ..DdimConfig::default()
        })
    }

    #[test]
    fn cipherdm_timestep_sequences() {
        let s = linear();
        let ts = ddim(50, Spacing::Uniform).timesteps(&s).unwrap();
        assert_eq!(ts.len(), 50);
        assert_eq!((ts[0], ts[1], ts[49]), (981, 961, 1));
        // Uniform with 30 steps: stride 33, the first 30 entries of arange(0, 1000, 33) + 1.
        let ts = ddim(30, Spacing::Uniform).timesteps(&s).unwrap();
        assert_eq!((ts[0], ts[29]), (958, 1));
        // jax 0.4.34: jnp.square(jnp.linspace(0, jnp.sqrt(1000 * .8), n)).astype(int) + 1
        let mut ts = ddim(10, Spacing::Quadratic).timesteps(&s).unwrap();
        ts.reverse();
        assert_eq!(ts, vec![1, 10, 40, 89, 159, 247, 356, 484, 633, 801]);
        let mut ts = ddim(50, Spacing::Quadratic).timesteps(&s).unwrap();
        ts.reverse();
        let jnp_50 = [
            1, 1, 2, 3, 6, 9, 12, 17, 22, 27, 34, 41, 48, 57, 66, 75, 86, 97, 108, 121, 134, 147,
            162, 177, 192, 209, 226, 243, 262, 281, 300, 321, 342, 363, 386, 409, 432, 457, 482,
            507, 534, 561, 588, 617, 646, 675, 706, 737, 768, 801,
        ];
        assert_eq!(ts, jnp_50);
        assert_eq!(Sampler::Ddpm.timesteps(&s).unwrap().len(), 1000);
    }

    #[test]
    fn impossible_step_counts_are_errors() {
        let s = linear();
        for sampler in [
            ddim(0, Spacing::Uniform),
            ddim(1001, Spacing::Uniform),
            ddim(1000, Spacing::Uniform),
        ] {
            match sampler.timesteps(&s) {
                Err(Error::Steps { .. }) => {}
                other => panic!("{sampler:?}: expected a Steps error, got {other:?}"),
            }
        }
    }

    #[test]
    fn ddim_with_a_perfect_denoiser_recovers_x0() {
        // x_T = sqrt(ab) x0 + sqrt(1 - ab) e with the denoiser returning e exactly: every DDIM
        // step (eta 0) keeps the trajectory on the same (x0, e) line, ending at
        // sqrt(ab[0]) x0 + sqrt(1 - ab[0]) e.
        let s = linear();
        let b = Plain;
        let x0 = PlainTensor::new(&[1, 1, 2, 2], vec![0.5, -0.25, 0.9, -0.9]).unwrap();
        let e = PlainTensor::new(&[1, 1, 2, 2], vec![1.0, -0.5, 0.3, 2.0]).unwrap();
        let sampler = ddim(20, Spacing::Uniform);
        let t0 = sampler.timesteps(&s).unwrap()[0];
        let ab = s.alpha_bars[t0];
        let x_t = b
            .add(
                &b.scale(&x0, ab.sqrt()).unwrap(),
                &b.scale(&e, (1.0 - ab).sqrt()).unwrap(),
            )
            .unwrap();
        let mut calls = vec![];
        let out = sampler
            .sample(
                &b,
                &s,
                x_t,
                |_, t| {
                    calls.push(t);
                    Ok(e.clone())
                },
                &mut crate::SeededNoise::new(0),
                |_| {},
            )
            .unwrap();
        assert_eq!(calls.len(), 20);
        let ab0 = s.alpha_bars[0];
        for i in 0..4 {
            let want = ab0.sqrt() * x0.data()[i] + (1.0 - ab0).sqrt() * e.data()[i];
            assert!((out.data()[i] - want).abs() < 1e-5);
        }
    }
}
