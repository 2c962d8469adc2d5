//! HE-Diffusion's min-distortion split of a latent into a plaintext part z and an encrypted part
//! y, exactly as its released `remove_points(x, threshold=0.01)` does it:
//!
//! 1. every latent entry gets a HILL steganography cost, per channel: the 3x3 high-pass residual
//!    R = x * [[-1,2,-1],[2,-4,2],[-1,2,-1]], then |R|, a 3x3 mean, the reciprocal and a 15x15
//!    mean, every filter with reflect padding (mirror without repeating the edge, numpy's and
//!    torch's `reflect`);
//! 2. its distortion is d = |x| * cost;
//! 3. the entries with the smallest distortion go to the plaintext part until they carry the
//!    threshold fraction of the total distortion (1% by default); all others are encrypted.
//!
//! The reciprocal is taken of (mean + 1e-10) so that a perfectly flat region gets a huge but
//! finite cost instead of a division by zero (HILL's usual guard). Each sample of a batch is split
//! on its own budget. Ties in distortion are broken by position, so the split is deterministic.

use crate::error::{Error, Result};

/// The fraction of total distortion the plaintext part may carry by default.
pub const DEFAULT_THRESHOLD: f64 = 0.01;

const HIGH_PASS: [[f64; 3]; 3] = [[-1.0, 2.0, -1.0], [2.0, -4.0, 2.0], [-1.0, 2.0, -1.0]];
const FLAT_GUARD: f64 = 1e-10;

/// Which entries of a latent stay in plaintext and which are encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// Number of entries in the latent.
    pub numel: usize,
    /// Linear (row-major) indices of the encrypted entries, strictly increasing.
    pub encrypted: Vec<u32>,
}

impl Split {
    /// Everything encrypted (the paper's dense baselines).
    pub fn all_encrypted(numel: usize) -> Result<Split> {
        let n = u32::try_from(numel).map_err(|_| Error::shape("split", "latent too large"))?;
        Ok(Split {
            numel,
            encrypted: (0..n).collect(),
        })
    }

    pub fn encrypted_fraction(&self) -> f64 {
        if self.numel == 0 {
            0.0
        } else {
            self.encrypted.len() as f64 / self.numel as f64
        }
    }

    /// A mask with `true` at encrypted entries.
    pub fn encrypted_mask(&self) -> Vec<bool> {
        let mut mask = vec![false; self.numel];
        for &i in &self.encrypted {
            mask[i as usize] = true;
        }
        mask
    }
}

/// Index into [0, n) for position `i` (possibly outside) under reflect padding, folding as often
/// as needed so that filters wider than the image still work.
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m < n as isize { m } else { period - m }) as usize
}

/// Correlates an (h, w) image with a k x k kernel (k odd) under reflect padding.
fn filter(img: &[f64], h: usize, w: usize, kernel: &[f64], k: usize) -> Vec<f64> {
    let r = (k / 2) as isize;
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            let mut acc = 0.0;
            for dy in 0..k {
                let row = reflect(y as isize + dy as isize - r, h) * w;
                for dx in 0..k {
                    let col = reflect(x as isize + dx as isize - r, w);
                    acc += kernel[dy * k + dx] * img[row + col];
                }
            }
            out[y * w + x] = acc;
        }
    }
    out
}

/// A separable k x k mean under reflect padding (rows then columns).
fn box_mean(img: &[f64], h: usize, w: usize, k: usize) -> Vec<f64> {
    let r = (k / 2) as isize;
    let mut rows = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            rows[y * w + x] = (0..k)
                .map(|d| img[y * w + reflect(x as isize + d as isize - r, w)])
                .sum::<f64>();
        }
    }
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = (0..k)
                .map(|d| rows[reflect(y as isize + d as isize - r, h) * w + x])
                .sum::<f64>()
                / (k * k) as f64;
        }
    }
    out
}

/// The HILL cost of every entry of one (h, w) channel.
pub fn hill_cost(channel: &[f64], h: usize, w: usize) -> Vec<f64> {
    let hp: Vec<f64> = HIGH_PASS.iter().flatten().copied().collect();
    let residual: Vec<f64> = filter(channel, h, w, &hp, 3)
        .into_iter()
        .map(f64::abs)
        .collect();
    let smoothed = box_mean(&residual, h, w, 3);
    let inverse: Vec<f64> = smoothed.iter().map(|m| 1.0 / (m + FLAT_GUARD)).collect();
    box_mean(&inverse, h, w, 15)
}

/// d = |x| * HILL cost for every entry of an NCHW latent.
pub fn distortion(latent: &[f32], shape: &[usize]) -> Result<Vec<f64>> {
    let (n, c, h, w) = nchw(shape, latent.len())?;
    let mut d = Vec::with_capacity(latent.len());
    for plane in latent.chunks(h * w).take(n * c) {
        let x: Vec<f64> = plane.iter().map(|&v| v as f64).collect();
        let cost = hill_cost(&x, h, w);
        d.extend(x.iter().zip(&cost).map(|(v, c)| v.abs() * c));
    }
    Ok(d)
}

/// Splits an NCHW latent: per sample, the smallest-distortion entries stay plain while their
/// cumulative distortion stays within `threshold` of the sample's total; the rest is encrypted.
pub fn min_distortion_split(latent: &[f32], shape: &[usize], threshold: f64) -> Result<Split> {
    if !(0.0..=1.0).contains(&threshold) {
        return Err(Error::Other(format!(
            "split threshold {threshold} is not a fraction in [0, 1]"
        )));
    }
    let (n, _, _, _) = nchw(shape, latent.len())?;
    u32::try_from(latent.len()).map_err(|_| Error::shape("split", "latent too large"))?;
    let d = distortion(latent, shape)?;
    let per_sample = latent.len() / n.max(1);
    let mut encrypted = Vec::new();
    for s in 0..n {
        let base = s * per_sample;
        let ds = &d[base..base + per_sample];
        let total: f64 = ds.iter().sum();
        let budget = threshold * total;
        let mut order: Vec<usize> = (0..per_sample).collect();
        order.sort_by(|&i, &j| ds[i].total_cmp(&ds[j]).then(i.cmp(&j)));
        let mut plain = vec![false; per_sample];
        let mut carried = 0.0;
        for &i in &order {
            if carried + ds[i] > budget {
                break;
            }
            carried += ds[i];
            plain[i] = true;
        }
        encrypted.extend(
            (0..per_sample)
                .filter(|&i| !plain[i])
                .map(|i| (base + i) as u32),
        );
    }
    Ok(Split {
        numel: latent.len(),
        encrypted,
    })
}

fn nchw(shape: &[usize], len: usize) -> Result<(usize, usize, usize, usize)> {
    match *shape {
        [n, c, h, w] if n * c * h * w == len && h > 0 && w > 0 => Ok((n, c, h, w)),
        _ => Err(Error::shape(
            "split",
            format!("latent of {len} values with shape {shape:?}: need NCHW"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_mirrors_without_repeating_the_edge() {
        // numpy.pad([0,1,2,3], 2, mode="reflect") == [2,1,0,1,2,3,2,1]
        let got: Vec<usize> = (-2..6).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, vec![2, 1, 0, 1, 2, 3, 2, 1]);
        // Wider than the image: keeps folding (numpy does the same).
        assert_eq!(reflect(-7, 4), 1);
        assert_eq!(reflect(5, 1), 0);
    }

    #[test]
    fn box_mean_of_constant_is_constant() {
        let img = vec![3.0; 20 * 9];
        for v in box_mean(&img, 20, 9, 15) {
            assert!((v - 3.0).abs() < 1e-12);
        }
    }

    #[test]
    fn high_pass_kills_linear_ramps() {
        // The HILL kernel sums to zero and annihilates planes: a ramp has zero residual away
        // from the border, so its cost is dominated by the guard (huge).
        let (h, w) = (16, 16);
        let ramp: Vec<f64> = (0..h * w)
            .map(|i| (i / w) as f64 + 2.0 * (i % w) as f64)
            .collect();
        let hp: Vec<f64> = HIGH_PASS.iter().flatten().copied().collect();
        let r = filter(&ramp, h, w, &hp, 3);
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                assert!(r[y * w + x].abs() < 1e-9);
            }
        }
    }

    #[test]
    fn budget_is_respected_and_maximal() {
        let shape = [2, 1, 12, 12];
        let latent: Vec<f32> = (0..288)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let split = min_distortion_split(&latent, &shape, 0.05).unwrap();
        let d = distortion(&latent, &shape).unwrap();
        let mask = split.encrypted_mask();
        for s in 0..2 {
            let ds = &d[s * 144..(s + 1) * 144];
            let ms = &mask[s * 144..(s + 1) * 144];
            let total: f64 = ds.iter().sum();
            let plain: f64 = ds.iter().zip(ms).filter(|(_, &m)| !m).map(|(d, _)| d).sum();
            assert!(plain <= 0.05 * total + 1e-12);
            // Maximal: the cheapest encrypted entry would break the budget.
            let cheapest = ds
                .iter()
                .zip(ms)
                .filter(|(_, &m)| m)
                .map(|(d, _)| *d)
                .fold(f64::INFINITY, f64::min);
            assert!(plain + cheapest > 0.05 * total);
            // And every plain entry is no more distorting than every encrypted one.
            let worst_plain = ds
                .iter()
                .zip(ms)
                .filter(|(_, &m)| !m)
                .map(|(d, _)| *d)
                .fold(0.0, f64::max);
            assert!(worst_plain <= cheapest);
        }
        assert!(split.encrypted.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn threshold_zero_and_one() {
        let shape = [1, 2, 8, 8];
        let latent: Vec<f32> = (0..128).map(|i| (i as f32 * 0.7).sin()).collect();
        assert_eq!(
            min_distortion_split(&latent, &shape, 0.0)
                .unwrap()
                .encrypted
                .len(),
            // Entries with zero distortion (x == 0) fit any budget; sin(0) = 0 is one.
            127
        );
        // The whole budget: all plain, up to rounding of the last entry's sum.
        assert!(
            min_distortion_split(&latent, &shape, 1.0)
                .unwrap()
                .encrypted
                .len()
                <= 1
        );
        assert!(min_distortion_split(&latent, &shape, 1.5).is_err());
        assert!(min_distortion_split(&latent, &[1, 2, 8, 7], 0.01).is_err());
    }
}
