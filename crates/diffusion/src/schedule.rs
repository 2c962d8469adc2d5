//! Beta schedules and the derived alpha products, in float32 as CipherDM computes them with jnp
//! (so that DDIM and DDPM coefficients match its sampler to the last bit where it matters).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How the betas are generated (the `[schedule]` table of a model's config.toml).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum BetaSchedule {
    /// `jnp.linspace(beta_start, beta_end, timesteps)` in float32.
    Linear {
        timesteps: usize,
        beta_start: f32,
        beta_end: f32,
    },
    /// Nichol & Dhariwal's cosine schedule with offset `s`, betas capped at 0.999.
    Cosine {
        timesteps: usize,
        #[serde(default = "default_cosine_s")]
        s: f64,
    },
}

fn default_cosine_s() -> f64 {
    0.008
}

/// The betas of a schedule and everything the samplers derive from them.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub betas: Vec<f32>,
    pub alphas: Vec<f32>,
    /// Cumulative products of the alphas (alpha-bar).
    pub alpha_bars: Vec<f32>,
}

impl BetaSchedule {
    pub fn timesteps(&self) -> usize {
        match *self {
            BetaSchedule::Linear { timesteps, .. } | BetaSchedule::Cosine { timesteps, .. } => {
                timesteps
            }
        }
    }

    pub fn build(&self) -> Result<Schedule> {
        let t = self.timesteps();
        if t < 2 {
            return Err(Error::Schedule(format!("{t} timesteps; need at least 2")));
        }
        let betas = match *self {
            BetaSchedule::Linear {
                beta_start,
                beta_end,
                ..
            } => {
                // jnp.linspace in float32: start * (1 - i/(T-1)) + stop * i/(T-1), stop exact.
                let div = (t - 1) as f32;
                let mut betas: Vec<f32> = (0..t - 1)
                    .map(|i| {
                        let step = i as f32 / div;
                        beta_start * (1.0 - step) + beta_end * step
                    })
                    .collect();
                betas.push(beta_end);
                betas
            }
            BetaSchedule::Cosine { s, .. } => {
                if !(s.is_finite() && s >= 0.0) {
                    return Err(Error::Schedule(format!("cosine offset s = {s}")));
                }
                // CipherDM: f(t) = cos((t/T + s)/(1 + s) * pi/2)^2 with the argument formed in
                // f64 (Python floats) and cos/square/divide in float32 (jnp).
                let f = |i: usize| {
                    let arg = ((i as f64 / t as f64 + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2)
                        as f32;
                    let c = arg.cos();
                    c * c
                };
                let f0 = f(0);
                let alpha_bar: Vec<f32> = (0..=t).map(|i| f(i) / f0).collect();
                (1..=t)
                    .map(|i| (1.0 - alpha_bar[i] / alpha_bar[i - 1]).min(0.999))
                    .collect()
            }
        };
        Schedule::from_betas(betas)
    }
}

impl Schedule {
    pub fn from_betas(betas: Vec<f32>) -> Result<Schedule> {
        if let Some((i, b)) = betas
            .iter()
            .enumerate()
            .find(|(_, b)| !(**b > 0.0 && **b < 1.0))
        {
            return Err(Error::Schedule(format!(
                "beta[{i}] = {b}; every beta must be in (0, 1)"
            )));
        }
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        let alpha_bars = alphas
            .iter()
            .scan(1.0f32, |acc, a| {
                *acc *= a;
                Some(*acc)
            })
            .collect();
        Ok(Schedule {
            betas,
            alphas,
            alpha_bars,
        })
    }

    /// Number of diffusion timesteps T (valid timesteps are 0..T).
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_schedule_matches_jnp() {
        let s = BetaSchedule::Linear {
            timesteps: 1000,
            beta_start: 1e-4,
            beta_end: 0.02,
        }
        .build()
        .unwrap();
        // Values printed by jax 0.4.34: jnp.linspace(1e-4, 0.02, 1000) and jnp.cumprod(1 - betas).
        assert_eq!(s.betas[1], 0.000_119_919_92);
        assert_eq!(s.betas[998], 0.019_980_08);
        assert_eq!(s.betas[999], 0.02);
        let jnp_alpha_bars = [
            (0, 0.999_899_983_406_066_9),
            (1, 0.999_780_058_860_778_8),
            (500, 0.077_796_660_363_674_16),
            (999, 4.035_829_624_626_785_5e-5),
        ];
        for (t, want) in jnp_alpha_bars {
            let rel = ((s.alpha_bars[t] as f64 - want) / want).abs();
            assert!(
                rel < 1e-5,
                "alpha_bar[{t}] = {}, jnp {want}",
                s.alpha_bars[t]
            );
        }
    }

    #[test]
    fn cosine_schedule_is_monotone_and_capped() {
        let s = BetaSchedule::Cosine {
            timesteps: 1000,
            s: 0.008,
        }
        .build()
        .unwrap();
        assert!(s.betas.windows(2).all(|w| w[0] <= w[1] + 1e-7));
        assert!(s.betas[999] <= 0.999 && s.betas[0] > 0.0);
        assert!(s.alpha_bars.windows(2).all(|w| w[1] < w[0]));
        // alpha_bar(t) = f(t)/f(0) by construction; check a middle value in f64.
        let f = |t: f64| {
            ((t / 1000.0 + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        let want = f(500.0) / f(0.0);
        assert!((s.alpha_bars[499] as f64 - want).abs() < 1e-4);
    }

    #[test]
    fn bad_schedules_are_rejected() {
        let bad = BetaSchedule::Linear {
            timesteps: 10,
            beta_start: 0.0,
            beta_end: 0.02,
        };
        assert!(matches!(bad.build(), Err(Error::Schedule(_))));
        let one = BetaSchedule::Linear {
            timesteps: 1,
            beta_start: 0.1,
            beta_end: 0.2,
        };
        assert!(one.build().is_err());
    }
}
