//! Fréchet distance between two sets of feature vectors, each modelled as a Gaussian:
//! |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)). The matrix square root is computed
//! symmetrically: Tr((S_a S_b)^(1/2)) = Tr((A S_b A)^(1/2)) with A = S_a^(1/2), both through
//! symmetric eigendecompositions (nalgebra), which stay real and stable for PSD inputs.

use nalgebra::{DMatrix, DVector, SymmetricEigen};

/// Mean and (unbiased) covariance of `n` rows of `dim` features.
pub fn mean_cov(rows: &[f32], dim: usize) -> (DVector<f64>, DMatrix<f64>) {
    let n = rows.len() / dim;
    let x = DMatrix::from_row_iterator(n, dim, rows.iter().map(|&v| v as f64));
    let mean = x.row_mean().transpose();
    let centred = DMatrix::from_fn(n, dim, |i, j| x[(i, j)] - mean[j]);
    let cov = centred.transpose() * &centred / (n.max(2) - 1) as f64;
    (mean, cov)
}

/// The PSD square root of a symmetric matrix (negative eigenvalues from rounding become 0).
pub fn sqrt_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let sym = (m + m.transpose()) * 0.5;
    let eig = SymmetricEigen::new(sym);
    let d = DMatrix::from_diagonal(&eig.eigenvalues.map(|l| l.max(0.0).sqrt()));
    &eig.eigenvectors * d * eig.eigenvectors.transpose()
}

/// FID between feature sets `a` and `b` (rows of `dim` values).
pub fn frechet_distance(a: &[f32], b: &[f32], dim: usize) -> f64 {
    let (ma, sa) = mean_cov(a, dim);
    let (mb, sb) = mean_cov(b, dim);
    let root_a = sqrt_psd(&sa);
    let cross = sqrt_psd(&(&root_a * &sb * &root_a)).trace();
    (ma - mb).norm_squared() + sa.trace() + sb.trace() - 2.0 * cross
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows drawn deterministically with a given per-dimension mean and scale.
    fn gaussian_rows(n: usize, means: &[f64], scales: &[f64], seed: u64) -> Vec<f32> {
        let mut state = seed;
        let mut uniform = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let mut out = vec![];
        for _ in 0..n {
            for (m, s) in means.iter().zip(scales) {
                let z = (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos();
                out.push((m + s * z) as f32);
            }
        }
        out
    }

    #[test]
    fn matches_the_closed_form_for_independent_gaussians() {
        // For diagonal covariances FID = sum (m_a - m_b)^2 + (s_a - s_b)^2.
        let a = gaussian_rows(20000, &[0.0, 1.0, -2.0], &[1.0, 2.0, 0.5], 1);
        let b = gaussian_rows(20000, &[0.5, 1.0, -1.0], &[1.0, 1.0, 1.5], 2);
        let expected = 0.25 + 0.0 + 1.0 + 0.0 + 1.0 + 1.0;
        let got = frechet_distance(&a, &b, 3);
        assert!(
            (got - expected).abs() < 0.1,
            "FID {got}, closed form {expected}"
        );
    }

    #[test]
    fn is_zero_for_identical_sets_and_symmetric() {
        let a = gaussian_rows(500, &[0.0; 4], &[1.0, 2.0, 3.0, 4.0], 3);
        let b = gaussian_rows(500, &[1.0; 4], &[1.0; 4], 4);
        assert!(frechet_distance(&a, &a, 4).abs() < 1e-6);
        let (ab, ba) = (frechet_distance(&a, &b, 4), frechet_distance(&b, &a, 4));
        assert!((ab - ba).abs() < 1e-6 * ab.max(1.0), "{ab} vs {ba}");
    }

    #[test]
    fn square_root_squares_back() {
        let m = DMatrix::from_row_slice(3, 3, &[4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0]);
        let r = sqrt_psd(&m);
        assert!((&r * &r - &m).abs().max() < 1e-10);
    }
}
