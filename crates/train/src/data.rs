//! Training data: the MNIST rows training may see, and random batches of them.

use nn::sd::mnist::{Digits, SIDE};
use nn::Result;
use rand::Rng;

use crate::config::TrainConfig;

/// The training rows (never the held-out ones), optionally cut to `train_rows`.
pub fn training_digits(cfg: &TrainConfig) -> Result<Digits> {
    let (train, _) = Digits::load(&cfg.data)?.split()?;
    Ok(match cfg.train_rows {
        Some(n) if n < train.len() => train.slice(0..n),
        _ => train,
    })
}

/// `n` random row indices.
pub fn batch_indices(rng: &mut impl Rng, rows: usize, n: usize) -> Vec<usize> {
    (0..n).map(|_| rng.random_range(0..rows)).collect()
}

/// Images of rows `idx` as (N, 1, 28, 28) values, each shifted by up to `max_shift` pixels
/// (background fills in).
pub fn images(d: &Digits, idx: &[usize], max_shift: usize, rng: &mut impl Rng) -> Vec<f32> {
    let mut out = Vec::with_capacity(idx.len() * SIDE * SIDE);
    let s = max_shift as i64;
    for &i in idx {
        let img = d.image(i);
        if s == 0 {
            out.extend_from_slice(img);
            continue;
        }
        let (dy, dx) = (rng.random_range(-s..=s), rng.random_range(-s..=s));
        for y in 0..SIDE as i64 {
            for x in 0..SIDE as i64 {
                let (sy, sx) = (y - dy, x - dx);
                let inside = (0..SIDE as i64).contains(&sy) && (0..SIDE as i64).contains(&sx);
                out.push(if inside {
                    img[(sy as usize) * SIDE + sx as usize]
                } else {
                    -1.0
                });
            }
        }
    }
    out
}
