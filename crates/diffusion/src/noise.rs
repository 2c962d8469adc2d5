//! Where a sampler's per-step noise comes from.

use nn::Backend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::StandardNormal;

use crate::{Error, Result};

/// Standard normal noise for the sampler's stochastic steps (DDPM after every step but the last,
/// DDIM when eta > 0). Under MPC an implementation hands out the client's shares.
pub trait NoiseSource<B: Backend> {
    /// Noise of `shape` added after the step at timestep `t`.
    fn noise(&mut self, b: &B, t: usize, shape: &[usize]) -> nn::Result<B::Tensor>;
}

/// Noise from a seeded ChaCha20 generator (reproducible across platforms and crate versions).
/// The values enter through `Backend::public`: this source is for plaintext sampling.
pub struct SeededNoise {
    rng: ChaCha20Rng,
}

impl SeededNoise {
    pub fn new(seed: u64) -> Self {
        SeededNoise {
            rng: ChaCha20Rng::seed_from_u64(seed),
        }
    }

    /// `n` standard normal values (also used to draw x_T, before any step noise).
    pub fn normal(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.rng.sample(StandardNormal)).collect()
    }
}

impl<B: Backend> NoiseSource<B> for SeededNoise {
    fn noise(&mut self, b: &B, _t: usize, shape: &[usize]) -> nn::Result<B::Tensor> {
        let values = self.normal(shape.iter().product());
        b.public(shape, &values)
    }
}

/// Noise given up front as a (T, ...) array: entry t is the noise added after the step at
/// timestep t (the layout of CipherDM's reference `ddpm.noise`).
pub struct TensorNoise {
    per_step: Vec<usize>,
    steps: usize,
    values: Vec<f32>,
}

impl TensorNoise {
    /// `shape` is (T, N, C, H, W); `values` row-major.
    pub fn new(shape: &[usize], values: Vec<f32>) -> Result<Self> {
        let Some((&steps, per_step)) = shape.split_first() else {
            return Err(Error::Noise("noise tensor has no timestep axis".into()));
        };
        if shape.iter().product::<usize>() != values.len() {
            return Err(Error::Noise(format!(
                "shape {shape:?} does not match {} values",
                values.len()
            )));
        }
        Ok(TensorNoise {
            per_step: per_step.to_vec(),
            steps,
            values,
        })
    }

    /// Shape of one step's noise.
    pub fn step_shape(&self) -> &[usize] {
        &self.per_step
    }

    pub fn steps(&self) -> usize {
        self.steps
    }
}

impl<B: Backend> NoiseSource<B> for TensorNoise {
    fn noise(&mut self, b: &B, t: usize, shape: &[usize]) -> nn::Result<B::Tensor> {
        if shape != self.per_step.as_slice() || t >= self.steps {
            return Err(nn::Error::shape(
                "noise",
                format!(
                    "asked for {shape:?} at timestep {t}; the file holds {} steps of {:?}",
                    self.steps, self.per_step
                ),
            ));
        }
        let len = self.per_step.iter().product::<usize>();
        b.public(shape, &self.values[t * len..(t + 1) * len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nn::Plain;

    #[test]
    fn seeded_noise_is_reproducible_and_standard() {
        let a = SeededNoise::new(7).normal(20_000);
        assert_eq!(a, SeededNoise::new(7).normal(20_000));
        assert_ne!(a[..10], SeededNoise::new(8).normal(10)[..]);
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }

    #[test]
    fn tensor_noise_hands_out_step_t() {
        let mut n = TensorNoise::new(&[3, 1, 2], vec![0., 1., 2., 3., 4., 5.]).unwrap();
        let x = NoiseSource::<Plain>::noise(&mut n, &Plain, 2, &[1, 2]).unwrap();
        assert_eq!(x.data(), &[4.0, 5.0]);
        assert!(NoiseSource::<Plain>::noise(&mut n, &Plain, 3, &[1, 2]).is_err());
        assert!(NoiseSource::<Plain>::noise(&mut n, &Plain, 0, &[2, 1]).is_err());
        assert!(TensorNoise::new(&[3, 1, 2], vec![0.0; 5]).is_err());
    }
}
