//! Sinusoidal timestep features. The timestep is public, so they are computed in the clear (in
//! float32, the way CipherDM's jnp code evaluates them) and enter the model through
//! `Backend::public`.

/// Features (N, dim): [sin(t * scale * f_i), cos(t * scale * f_i)] with
/// f_i = exp(-i * ln(10000) / (dim / 2)), i < dim / 2.
pub fn timestep_features(t: &[usize], dim: usize, scale: f32) -> Vec<f32> {
    let half = dim / 2;
    let step = -(10000f64.ln() / half as f64) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| ((i as f32 * step) as f64).exp() as f32)
        .collect();
    let mut out = Vec::with_capacity(t.len() * dim);
    for &ti in t {
        let x = ti as f32 * scale;
        let args: Vec<f32> = freqs.iter().map(|&f| x * f).collect();
        out.extend(args.iter().map(|&a| (a as f64).sin() as f32));
        out.extend(args.iter().map(|&a| (a as f64).cos() as f32));
    }
    out
}

/// One-hot rows (N, classes) for `labels`; `None` if a label is out of range.
pub fn one_hot(labels: &[usize], classes: usize) -> Option<Vec<f32>> {
    let mut out = vec![0.0f32; labels.len() * classes];
    for (row, &label) in labels.iter().enumerate() {
        if label >= classes {
            return None;
        }
        out[row * classes + label] = 1.0;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_follow_the_formula() {
        let f = timestep_features(&[0, 981], 4, 1.0);
        assert_eq!(&f[..4], &[0.0, 0.0, 1.0, 1.0]);
        // dim 4: frequencies 1 and 1/100.
        let want = [981f64.sin(), 9.81f64.sin(), 981f64.cos(), 9.81f64.cos()];
        for (got, want) in f[4..].iter().zip(want) {
            assert!((*got as f64 - want).abs() < 1e-5);
        }
        assert_eq!(one_hot(&[1, 0], 2), Some(vec![0.0, 1.0, 1.0, 0.0]));
        assert_eq!(one_hot(&[2], 2), None);
    }
}
