//! The truncation failure probability, measured. The fast method's stated rate is (|z| + 1) / 2^64
//! per element for an un-truncated value z; on products of magnitude 2^56 that is 1/256, frequent
//! enough to count. The robust method must show no large error at all, up to |z| close to 2^62.

mod common;
use common::*;

use mpc::TruncMethod;
use ring::RingTensor;

/// Multiply x by y elementwise with `m` and count results off by more than their rounding (each
/// must be a wrap: off by exactly 2^46).
fn count_failures(m: TruncMethod, xs: &[u64], ys: &[u64]) -> usize {
    let n = xs.len();
    let x = RingTensor::new(&[n], xs.to_vec()).unwrap();
    let y = RingTensor::new(&[n], ys.to_vec()).unwrap();
    let outs = run(cfg(m), &[x, y], |p, s| p.mul(&s[0], &s[1]));
    let got = open(&outs);
    let mut large = 0;
    for i in 0..n {
        let want = trunc_prod(xs[i], ys[i], 18);
        let e = (got.data()[i] as i64).wrapping_sub(want);
        // Rounding: floor or floor + 1 (fast); the robust fused product is within 1.5 ulp.
        if (-1..=2).contains(&e) {
            continue;
        }
        // A failure is off by 2^(64-18) = 2^46 in the ring (plus the rounding).
        let wrap = e.signum() * (1 << 46);
        assert!(
            (-1..=2).contains(&(e - wrap)),
            "element {i}: error {e} is neither a rounding nor a wrap"
        );
        large += 1;
    }
    large
}

#[test]
fn fast_truncation_fails_at_the_stated_rate() {
    let n = 100_000;
    // x = y = +-2^10 in real terms: z = 2^56 in the ring (36 fractional bits).
    let xs: Vec<u64> = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                1u64 << 28
            } else {
                (1u64 << 28).wrapping_neg()
            }
        })
        .collect();
    let ys = vec![1u64 << 28; n];
    let large = count_failures(TruncMethod::Fast, &xs, &ys);
    let p = ((1u64 << 56) + 1) as f64 / 2f64.powi(64);
    let expect = p * n as f64;
    let sd = (expect * (1.0 - p)).sqrt();
    eprintln!("fast truncation: {large} large errors in {n} products of |z| = 2^56, stated {expect:.1} +- {sd:.1}");
    assert!(
        (large as f64 - expect).abs() < 6.0 * sd,
        "measured {large} failures, stated {expect:.1} +- {sd:.1}"
    );
}

#[test]
fn robust_truncation_never_fails_below_2_62() {
    let n = 50_000;
    // |z| = 2^61 and just below 2^62, both signs.
    let xs: Vec<u64> = (0..n)
        .map(|i| match i % 4 {
            0 => 1u64 << 31,
            1 => (1u64 << 31).wrapping_neg(),
            2 => (1u64 << 32) - 1,
            _ => ((1u64 << 32) - 1).wrapping_neg(),
        })
        .collect();
    let ys = vec![(1u64 << 30) - 7; n];
    let large = count_failures(TruncMethod::Robust, &xs, &ys);
    assert_eq!(large, 0);
    // At 2^56, where the fast method fails about 1 in 256 times, the robust one never does.
    let xs = vec![1u64 << 28; n];
    let large = count_failures(TruncMethod::Robust, &xs, &xs);
    assert_eq!(large, 0);
}
