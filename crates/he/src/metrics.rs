//! Image-similarity measures for the leakage audit: PSNR and SSIM of a reconstruction against the
//! truth, on NCHW tensors. SSIM is Wang et al.'s (2004): an 11x11 Gaussian window of sigma 1.5,
//! K1 = 0.01, K2 = 0.03, evaluated where the window fits inside the image ("valid", as in the
//! authors' reference code) and averaged over positions, channels and samples.

use crate::error::{Error, Result};

/// 10 log10(L^2 / MSE) in dB; infinite for an exact reconstruction.
pub fn psnr(truth: &[f32], recon: &[f32], data_range: f64) -> Result<f64> {
    same_len(truth, recon)?;
    let mse = truth
        .iter()
        .zip(recon)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum::<f64>()
        / truth.len().max(1) as f64;
    Ok(10.0 * (data_range * data_range / mse).log10())
}

/// Mean SSIM over the (n, c) planes of NCHW tensors of `shape`.
pub fn ssim(truth: &[f32], recon: &[f32], shape: &[usize], data_range: f64) -> Result<f64> {
    same_len(truth, recon)?;
    let [n, c, h, w] = *shape else {
        return Err(Error::shape("ssim", format!("need NCHW, got {shape:?}")));
    };
    if n * c * h * w != truth.len() {
        return Err(Error::shape(
            "ssim",
            format!("shape {shape:?} for {} values", truth.len()),
        ));
    }
    const K: usize = 11;
    let window = gaussian_window(K, 1.5);
    // Images smaller than the window fall back to one window covering the whole plane.
    let (kh, kw, window) = if h >= K && w >= K {
        (K, K, window)
    } else {
        (h, w, vec![1.0 / (h * w) as f64; h * w])
    };
    let c1 = (0.01 * data_range).powi(2);
    let c2 = (0.03 * data_range).powi(2);
    let mut total = 0.0;
    let mut count = 0usize;
    for (pa, pb) in truth.chunks(h * w).zip(recon.chunks(h * w)) {
        for y in 0..=h - kh {
            for x in 0..=w - kw {
                let (mut ma, mut mb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for dy in 0..kh {
                    for dx in 0..kw {
                        let g = window[dy * kw + dx];
                        let a = pa[(y + dy) * w + x + dx] as f64;
                        let b = pb[(y + dy) * w + x + dx] as f64;
                        ma += g * a;
                        mb += g * b;
                        saa += g * a * a;
                        sbb += g * b * b;
                        sab += g * a * b;
                    }
                }
                let (va, vb, cov) = (saa - ma * ma, sbb - mb * mb, sab - ma * mb);
                total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                    / ((ma * ma + mb * mb + c1) * (va + vb + c2));
                count += 1;
            }
        }
    }
    Ok(total / count as f64)
}

fn gaussian_window(k: usize, sigma: f64) -> Vec<f64> {
    let r = (k / 2) as f64;
    let g: Vec<f64> = (0..k)
        .map(|i| (-((i as f64 - r).powi(2)) / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = g.iter().sum();
    let mut w = Vec::with_capacity(k * k);
    for a in &g {
        for b in &g {
            w.push(a * b / (s * s));
        }
    }
    w
}

fn same_len(a: &[f32], b: &[f32]) -> Result<()> {
    if a.len() != b.len() || a.is_empty() {
        return Err(Error::shape(
            "similarity",
            format!("truth of {} values, reconstruction of {}", a.len(), b.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_images_are_perfect() {
        let a: Vec<f32> = (0..2 * 28 * 28).map(|i| (i as f32 * 0.1).sin()).collect();
        assert_eq!(psnr(&a, &a, 2.0).unwrap(), f64::INFINITY);
        assert!((ssim(&a, &a, &[2, 1, 28, 28], 2.0).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn matches_scikit_image() {
        // skimage 0.26: structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
        // use_sample_covariance=False, data_range=2.0) and peak_signal_noise_ratio(a, b,
        // data_range=2.0) on these two float32 28x28 images.
        let a: Vec<f32> = (0..784).map(|i| (i as f64 * 0.1).sin() as f32).collect();
        let b: Vec<f32> = (0..784)
            .map(|i| ((i as f64 * 0.1).sin() + 0.3 * (i as f64 * 0.37).cos()) as f32)
            .collect();
        let s = ssim(&a, &b, &[1, 1, 28, 28], 2.0).unwrap();
        assert!((s - 0.947_171_760_562_025_5).abs() < 1e-6, "{s}");
        let p = psnr(&a, &b, 2.0).unwrap();
        assert!((p - 19.478_163_418_928_496).abs() < 1e-4, "{p}");
    }

    #[test]
    fn psnr_of_known_error() {
        // Constant error 0.1 on range 2: 10 log10(4 / 0.01) = 26.02 dB.
        let a = vec![0.0f32; 100];
        let b = vec![0.1f32; 100];
        assert!((psnr(&a, &b, 2.0).unwrap() - 26.0206).abs() < 1e-3);
    }

    #[test]
    fn ssim_separates_structure_from_noise() {
        let img: Vec<f32> = (0..784)
            .map(|i| if (i % 28) > 14 { 1.0 } else { -1.0 })
            .collect();
        let noisy: Vec<f32> = img
            .iter()
            .enumerate()
            .map(|(i, v)| v + 0.1 * ((i * 7919 % 13) as f32 / 6.0 - 1.0))
            .collect();
        let unrelated: Vec<f32> = (0..784)
            .map(|i| ((i * 31 % 17) as f32 / 8.0) - 1.0)
            .collect();
        let s_noisy = ssim(&img, &noisy, &[1, 1, 28, 28], 2.0).unwrap();
        let s_unrelated = ssim(&img, &unrelated, &[1, 1, 28, 28], 2.0).unwrap();
        assert!(s_noisy > 0.6, "{s_noisy}");
        assert!(s_unrelated < 0.2, "{s_unrelated}");
        // A constant shift of the mean lowers only the luminance term, and symmetrically.
        let shifted: Vec<f32> = img.iter().map(|v| v + 0.5).collect();
        let s1 = ssim(&img, &shifted, &[1, 1, 28, 28], 2.0).unwrap();
        let s2 = ssim(&shifted, &img, &[1, 1, 28, 28], 2.0).unwrap();
        assert!((s1 - s2).abs() < 1e-12 && s1 < 1.0);
    }
}
