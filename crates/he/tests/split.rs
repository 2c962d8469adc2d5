//! The min-distortion split against the figure HE-Diffusion's released code gives: on a Gaussian
//! latent about 11% of entries stay plain at the default 1% threshold.

use he::split::{min_distortion_split, DEFAULT_THRESHOLD};

/// Standard normal samples (Box-Muller over a 64-bit LCG), deterministic.
fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut uniform = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
        })
        .collect()
}

#[test]
fn gaussian_sd_latent_keeps_about_eleven_percent_plain() {
    let shape = [1, 4, 64, 64];
    let latent = gaussian(4 * 64 * 64, 42);
    let split = min_distortion_split(&latent, &shape, DEFAULT_THRESHOLD).unwrap();
    let plain = 1.0 - split.encrypted_fraction();
    eprintln!("plain fraction on a 4x64x64 Gaussian latent: {plain:.4}");
    assert!((0.09..0.13).contains(&plain), "plain fraction {plain}");
}

#[test]
fn larger_threshold_keeps_more_plain() {
    let shape = [1, 1, 28, 28];
    let latent = gaussian(784, 7);
    let fractions: Vec<f64> = [0.01, 0.05, 0.2]
        .iter()
        .map(|&t| {
            1.0 - min_distortion_split(&latent, &shape, t)
                .unwrap()
                .encrypted_fraction()
        })
        .collect();
    assert!(fractions.windows(2).all(|w| w[0] < w[1]), "{fractions:?}");
}
