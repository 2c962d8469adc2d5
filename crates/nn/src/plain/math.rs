//! Elementwise kernels over slices, written branch-free so that the compiler vectorises them.
//! Each slice kernel is compiled twice, for the baseline target and for AVX2+FMA (see `simd.rs`).
//!
//! `libm`'s scalar `expf` costs a few nanoseconds a call; a batch-1 U-Net forward evaluates a few
//! hundred thousand exponentials (mostly in attention softmax), so the vectorised version below is
//! a sizeable share of the forward time. Its relative error is below 2e-7 (about 2 ulp) on the
//! whole clamped range, far inside what the model's tolerances need.

use super::simd::MulAdd;

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in a high part with few significant bits (exact when multiplied by n) and the rest.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Adding and subtracting 1.5 * 2^23 rounds an f32 of magnitude < 2^22 to the nearest integer.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// e^x for finite x; inputs are clamped to [-87, 88] (results 1.6e-38 .. 1.7e38).
///
/// No float-to-int conversion (Rust's saturating `as` would add NaN checks that block
/// vectorisation): the rounded n sits in the low mantissa bits of `x log2(e) + 1.5 * 2^23`.
#[inline(always)]
pub(crate) fn exp<M: MulAdd>(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let shifted = M::mul_add(x, LOG2_E, ROUND_MAGIC);
    let n = shifted - ROUND_MAGIC;
    let n_int = shifted.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
    let r = M::mul_add(-n, LN2_LO, M::mul_add(-n, LN2_HI, x));
    // Taylor series of e^r on |r| <= ln2/2, degree 7 (truncation error < 1e-8 relative).
    let p = 1.0 / 5040.0;
    let p = M::mul_add(p, r, 1.0 / 720.0);
    let p = M::mul_add(p, r, 1.0 / 120.0);
    let p = M::mul_add(p, r, 1.0 / 24.0);
    let p = M::mul_add(p, r, 1.0 / 6.0);
    let p = M::mul_add(p, r, 0.5);
    let p = M::mul_add(p, r, 1.0);
    let p = M::mul_add(p, r, 1.0);
    p * f32::from_bits(n_int.wrapping_add(127) << 23)
}

#[inline(always)]
pub(crate) fn silu<M: MulAdd>(x: f32) -> f32 {
    x / (1.0 + exp::<M>(-x))
}

/// x * tanh(softplus(x)), using tanh(ln(1 + u)) = (u^2 + 2u) / (u^2 + 2u + 2) with u = e^x.
#[inline(always)]
pub(crate) fn mish<M: MulAdd>(x: f32) -> f32 {
    let u = exp::<M>(x.min(20.0));
    let n = u * (u + 2.0);
    let y = x * n / (n + 2.0);
    // Past 20, tanh(softplus(x)) is 1 to f32 precision.
    if x > 20.0 {
        x
    } else {
        y
    }
}

/// GeLU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
#[inline(always)]
pub(crate) fn gelu<M: MulAdd>(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let z = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    // tanh(z) = 1 - 2 / (1 + e^{2z}); exp's clamping keeps this finite for any z.
    let tanh = 1.0 - 2.0 / (1.0 + exp::<M>(2.0 * z));
    0.5 * x * (1.0 + tanh)
}

/// A pointwise function, chosen outside the loop so that each loop inlines one formula.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pointwise {
    Silu,
    Mish,
    Gelu,
    Scale(f32),
    AddScalar(f32),
    Clamp(f32, f32),
}

simd_dispatch! {
    /// dst[i] = op(src[i]).
    pub(crate) fn pointwise(op: Pointwise, src: &[f32], dst: &mut [f32]) {
        let pairs = dst.iter_mut().zip(src);
        match op {
            Pointwise::Silu => pairs.for_each(|(d, &s)| *d = silu::<Madd>(s)),
            Pointwise::Mish => pairs.for_each(|(d, &s)| *d = mish::<Madd>(s)),
            Pointwise::Gelu => pairs.for_each(|(d, &s)| *d = gelu::<Madd>(s)),
            Pointwise::Scale(c) => pairs.for_each(|(d, &s)| *d = s * c),
            Pointwise::AddScalar(c) => pairs.for_each(|(d, &s)| *d = s + c),
            Pointwise::Clamp(lo, hi) => pairs.for_each(|(d, &s)| *d = s.max(lo).min(hi)),
        }
    }
}

/// Sum with eight independent accumulators, which the compiler keeps in one SIMD register (a
/// single running sum is a serial dependency chain it may not reorder).
#[inline(always)]
pub(crate) fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Largest element (NaN-ignoring), with eight independent lanes so that it vectorises.
#[inline(always)]
fn max(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = values.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for chunk in chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l = l.max(v);
        }
    }
    lanes.iter().copied().fold(tail, f32::max)
}

/// Replaces `row` by e^(scale * (x - max)) and returns the sum, i.e. an unnormalised softmax of
/// scale * x (scale > 0, so the max of scale * x is scale * max x).
#[inline(always)]
fn exp_shifted_row<M: MulAdd>(row: &mut [f32], scale: f32) -> f32 {
    let m = max(row);
    if !m.is_finite() {
        // An all-masked (or NaN) row has no defined softmax; spread uniformly rather than NaN.
        row.fill(1.0);
        return row.len() as f32;
    }
    let shift = scale * m;
    for v in row.iter_mut() {
        *v = exp::<M>(M::mul_add(*v, scale, -shift));
    }
    sum(row)
}

simd_dispatch! {
    /// Row-wise unnormalised softmax of `scale * x` (scale > 0) in place over rows of `row_len`:
    /// each row becomes e^(scale x - max) and `sums` receives the row sums (divide by them to
    /// normalise). With `causal_offset` = Some(o), row r sees only its first r + 1 + o entries;
    /// the rest become 0.
    pub(crate) fn exp_rows(
        data: &mut [f32],
        row_len: usize,
        scale: f32,
        causal_offset: Option<usize>,
        sums: &mut [f32],
    ) {
        for ((r, row), total) in data.chunks_exact_mut(row_len).enumerate().zip(sums.iter_mut()) {
            let visible = causal_offset.map_or(row_len, |o| (r + 1 + o).min(row_len));
            let (seen, masked) = row.split_at_mut(visible);
            *total = exp_shifted_row::<Madd>(seen, scale);
            masked.fill(0.0);
        }
    }
}

simd_dispatch! {
    /// Row-wise softmax in place over rows of `row_len`.
    pub(crate) fn softmax_rows(data: &mut [f32], row_len: usize) {
        for row in data.chunks_exact_mut(row_len) {
            let inv = 1.0 / exp_shifted_row::<Madd>(row, 1.0);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

simd_dispatch! {
    /// Mean and 1 / sqrt(var + eps) of `values` (biased variance), accumulated in f64.
    pub(crate) fn moments(values: &[f32], eps: f32, out: &mut (f32, f32)) {
        let n = values.len() as f64;
        let mut lanes = [0.0f64; 4];
        let chunks = values.chunks_exact(4);
        let tail = chunks.remainder();
        for chunk in chunks.clone() {
            for (l, &v) in lanes.iter_mut().zip(chunk) {
                *l += v as f64;
            }
        }
        let mean = (lanes.iter().sum::<f64>() + tail.iter().map(|&v| v as f64).sum::<f64>()) / n;
        let mut lanes = [0.0f64; 4];
        for chunk in chunks {
            for (l, &v) in lanes.iter_mut().zip(chunk) {
                *l += (v as f64 - mean) * (v as f64 - mean);
            }
        }
        let tail_sq: f64 = tail.iter().map(|&v| (v as f64 - mean) * (v as f64 - mean)).sum();
        let var = (lanes.iter().sum::<f64>() + tail_sq) / n;
        *out = (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32);
    }
}

simd_dispatch! {
    /// dst[i] = src[i] * a + b.
    pub(crate) fn affine(src: &[f32], a: f32, b: f32, dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s * a + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::simd::{Fused, Separate};
    use super::*;

    #[test]
    fn exp_is_accurate_over_its_range() {
        for exp in [exp::<Separate>, exp::<Fused>] {
            let mut worst = 0.0f64;
            let mut x = -87.0f32;
            while x < 88.0 {
                let want = (x as f64).exp();
                let rel = ((exp(x) as f64 - want) / want).abs();
                worst = worst.max(rel);
                x += 0.0137;
            }
            assert!(worst < 3e-7, "worst relative error {worst}");
            assert_eq!(exp(0.0), 1.0);
            assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
        }
    }

    #[test]
    fn activations_match_their_definitions() {
        type Activations = (fn(f32) -> f32, fn(f32) -> f32, fn(f32) -> f32);
        let variants: [Activations; 2] = [
            (silu::<Separate>, mish::<Separate>, gelu::<Separate>),
            (silu::<Fused>, mish::<Fused>, gelu::<Fused>),
        ];
        for (silu, mish, gelu) in variants {
            for i in -400..400 {
                let x = i as f32 * 0.1;
                let xd = x as f64;
                let sig = 1.0 / (1.0 + (-xd).exp());
                assert!((silu(x) as f64 - xd * sig).abs() < 1e-5 * (1.0 + xd.abs()));
                let mish_ref = xd * (xd.exp().ln_1p()).tanh();
                assert!(
                    (mish(x) as f64 - mish_ref).abs() < 1e-5 * (1.0 + xd.abs()),
                    "{x}"
                );
                let z = (2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3));
                let gelu_ref = 0.5 * xd * (1.0 + z.tanh());
                assert!(
                    (gelu(x) as f64 - gelu_ref).abs() < 1e-5 * (1.0 + xd.abs()),
                    "{x}"
                );
            }
        }
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let mut row = vec![1.0, 2.0, 3.0, -1e4];
        softmax_rows(&mut row, 4);
        let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|v| (v - 3.0).exp()).collect();
        let s: f64 = e.iter().sum();
        for i in 0..3 {
            assert!((row[i] as f64 - e[i] / s).abs() < 1e-6);
        }
        assert!(row[3] < 1e-30);
        // Causal: row r of a 3x3 sees r + 1 entries.
        let (mut rows, mut sums) = (vec![5.0; 9], vec![0.0; 3]);
        exp_rows(&mut rows, 3, 2.0, Some(0), &mut sums);
        assert_eq!(rows, vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]);
        assert_eq!(sums, vec![1.0, 2.0, 3.0]);
    }
}
