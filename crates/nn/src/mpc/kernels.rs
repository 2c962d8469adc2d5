//! Small fixed-point kernels the backends need beyond the nonlinear library, written once over
//! `FxpOps` so that `Mpc` (secure engine) and `Approx` (twin) compute the same thing.

use mpc::nonlinear::poly::ScaledPoly;
use mpc::nonlinear::reciprocal::{reciprocal, Pow2Range, ReciprocalMethod};
use mpc::nonlinear::softmax::row_max;
use mpc::nonlinear::{FxpOps, NonlinearError, Threshold};

/// Resolution of the fold's sign and range comparisons (either answer is right within it).
const FOLD_RESOLUTION: f64 = 0.125;

/// g(t) = t sigmoid(-t) on [-1/8, 11 + 1/8], tau = (t - 5.5) / 5.625: a degree-10 near-minimax
/// fit (Lawson's iteration on Chebyshev nodes), max error 2.6e-4; g(11) = 1.8e-4.
const SILU_FINE_G: ScaledPoly<'static> = ScaledPoly {
    center: 5.5,
    half_width: 5.625,
    coef: &[
        0.022_356_243_180_375_185,
        -0.105_470_358_338_635_26,
        0.223_720_856_509_571_05,
        -0.223_027_673_598_195_34,
        0.184_513_126_077_400_3,
        -0.411_282_911_094_831_95,
        0.005_628_406_643_805_484,
        1.265_327_444_999_306_2,
        -0.952_312_346_198_034_8,
        -0.492_005_220_874_106_7,
        0.482_975_103_154_346_5,
    ],
};
const SILU_FINE_CUT: f64 = 11.0;

/// SiLU `fine`: the nonlinear library's symmetric fold (silu(x) = relu(x) - g(|x|), g masked to
/// 0 beyond a cut) with a longer and finer fit of g: max abs error 2.6e-4 plus the fixed-point
/// rounding of a degree-10 polynomial, against 1.5e-3 for the library's `ours` (degree 8 on
/// [0, 9]). SiLU's error dominates the error of a DDIM sample's x_0 (0.044 with `ours` on the
/// reference x_T, 0.0008 with an exact SiLU), which is why this method exists.
///
/// The three comparisons (x < 0, x < cut, x < -cut) go in one batch of one width, so the fold
/// costs one comparison latency: |x| < cut is [x < cut] xor [x < -cut] (the second implies the
/// first), a local operation on the bits.
///
/// Cost: 3 reduced-width comparisons in one call, 2 selects, the polynomial by powers (5 scaled
/// jobs in 4 calls). Latency: comparison (L + 2), select (2), 4 x 2, select (2). Domain:
/// |x| < `bound`; beyond it undefined. Security: library protocols on shares only (comparison,
/// select, fused products), a local xor, public constants; nothing is opened.
pub fn silu_fine<E: FxpOps>(e: &E, x: &E::A, bound: f64) -> Result<E::A, NonlinearError> {
    // One width for all three, so that they share one call.
    let at = |below: f64| Threshold {
        below,
        bound: bound + SILU_FINE_CUT,
        resolution: FOLD_RESOLUTION,
    };
    let bits = e.less_than(&[
        (x, at(0.0)),
        (x, at(SILU_FINE_CUT)),
        (x, at(-SILU_FINE_CUT)),
    ])?;
    let inside = e.xor(&bits[1], &bits[2])?;
    // m = [x < 0] x, so relu(x) = x - m and |x| = x - 2m (either sign answer near 0 works:
    // relu and |x| flip together and -g(-x) = x sigmoid(x)).
    let m = e.select(&[(&bits[0], x)])?.remove(0);
    let t = e.sub(x, &e.mul_int(&m, 2))?;
    let relu = e.sub(x, &m)?;
    let g = SILU_FINE_G.eval(e, &t)?;
    let g = e.select(&[(&inside, &g)])?.remove(0);
    e.sub(&relu, &g)
}

/// The promise of `softmax_bounded`: every score |s| < this, and within a row max(s) - min(s)
/// < this. Measured on cipherdm-mnist (scripts/bench/score_range.py: the six attention layers
/// along DDIM-50 from CipherDM's four reference x_T and 60 seeded ones, 64 x 50 x 6 x 196 rows):
/// max |s| = 15.1, max(s) - min(s) = 19.1, so the margins are 2.1x and 1.7x. Beyond the second,
/// the exp fit leaves its domain (x < -32 after the max subtraction) and grows like a degree-40
/// polynomial: 0.016 at -35, 29 at -40.
pub const BOUNDED_SCORE_LIMIT: f64 = 32.0;

/// Largest max-tree undershoot the exp fit covers: the tree's comparisons get the resolution
/// 2^-3 / 2^ceil(log2 levels), so its levels together undershoot the max by at most this.
const BOUNDED_MAX_UNDERSHOOT: f64 = 0.125;

/// q(x) with q(x)^8 ~ exp(x) on x in [-32, 1/8] (t = x, tau = (x + 15.9375) / 16.0625): the
/// minimax quartic for the error that moves a row of n = 196,
/// E = max |q^8 - exp| / (exp(x) + 1/195), fitted by scripts/fit/exp_root.py (for a given E the
/// bound is linear in q's coefficients, so bisection on E over linear feasibility problems on
/// 40001 points finds the optimum; the error equioscillates at E = 5.23e-4).
///
/// Why this weight: n - 1 entries at the same x move the row's sum by (n - 1) |q^8 - exp|
/// against a sum of at least 1 + (n - 1) exp(x), so the sum is off by about E relative at most
/// and a softmax entry by about 2E; shorter rows are off by less, rows of 256 by 6.8e-4. The
/// fit has 5.4e-4 relative error above -3 (up to 9e-4 near -5.3, where exp(x) ~ 1/195), 6.0e-4
/// absolute anywhere, at most 4.6e-6 absolute below -5.3. Weighting for plain absolute error
/// instead, 1.2e-4 is reachable, but 195 entries near -8 then shift the sum by 2e-3; the quintic
/// this replaced (fitted for max(exp(x), 1e-5)) moved a row by up to 7e-3 from its tail.
///
/// q is not near exp(x/8) in the tail, only small enough that q^8 < 5e-6 there: that is what
/// lets the kernel drop exp's mask (a comparison and a select per element). A quartic is one
/// scaled job (28.5 bytes per score) fewer than that quintic.
const BOUNDED_EXP_ROOT: ScaledPoly<'static> = ScaledPoly {
    center: -15.9375,
    half_width: 16.0625,
    coef: &[
        0.114_745_717_268_865_76,
        0.355_039_103_700_717_06,
        0.225_879_258_350_996_7,
        0.052_210_301_244_299_484,
        0.267_806_569_488_841_74,
    ],
};

/// Softmax `bounded`, the pieces: for rows of `n` scores `x` (|x| and each row's spread below
/// [`BOUNDED_SCORE_LIMIT`]) the numerators e = q(x - max)^8 ~ exp(x - max) and one reciprocal
/// 1 / sum(e) per row; softmax = e * (1 / sum). Attention multiplies the numerators by the values
/// first and the (L x D) result by the reciprocals, so no (L x S) product is truncated for the
/// normalisation.
///
/// The row max: the library's tree of reduced-width comparisons with the bound above (15 bits
/// at rows of up to 256). The exp: no mask (see [`BOUNDED_EXP_ROOT`]), so its one comparison and
/// select per element are gone. Max error of a softmax entry at n <= 196: about 2 x 5.2e-4 from
/// the fit in the worst case (see [`BOUNDED_EXP_ROOT`]; 3.4e-4 on the test's peaked row), plus
/// the reciprocal's 1e-4 relative error and rounding (which adds up when many entries are equal:
/// 3.4e-4 more on the test's row of 195 equal entries in the twin, whose rounding is not random).
///
/// Cost per row of n (robust truncation, bytes over the three parties): the max tree, n - 1
/// comparisons of 15 bits (13.625 bytes each) and selects (32 bytes) in ceil(log2 n) levels of
/// 6 + 2 rounds; the quartic by powers, 2 scaled jobs (28.5 bytes per element, 2 rounds each);
/// three squarings (26.25 bytes, 2 rounds each); the reciprocal on one value per row. At rows
/// of 196: 183.7 bytes per score and 72 rounds per party (metered and checked against
/// the stated cost in crates/nn/tests/kernels_masked.rs); the library's `ours` also pays exp's
/// mask and a final product (which attention no longer needs). With the scores' product and the
/// two (L x D) products, attention costs 211 bytes per score.
///
/// Security: only the library's protocols on shares (reduced-width comparison, select, fused
/// products with truncation, the reciprocal), each of which reveals nothing; the bound is
/// public and fixed, and the control flow depends only on the public shape.
pub fn softmax_bounded<E: FxpOps>(
    e: &E,
    x: &E::A,
    n: usize,
) -> Result<(E::A, E::A), NonlinearError> {
    let len = e.len(x);
    if n == 0 || len % n != 0 {
        return Err(NonlinearError::Shape {
            op: "softmax_bounded",
            detail: format!("length {len} is not a multiple of the row length {n}"),
        });
    }
    let levels = n.next_power_of_two().trailing_zeros().max(1);
    let resolution = BOUNDED_MAX_UNDERSHOOT / levels.next_power_of_two() as f64;
    let max = row_max(e, x, n, BOUNDED_SCORE_LIMIT, resolution)?;
    let shifted = e.sub(x, &e.repeat_each(&max, n))?;
    let mut num = BOUNDED_EXP_ROOT.eval(e, &shifted)?;
    for _ in 0..3 {
        num = e.mul(&num, &num)?;
    }
    let sums = e.run_sums(&num, n)?;
    // Each row holds its max (e ~ 1, at most exp(1/8)) and n - 1 entries in [0, exp(1/8)].
    let inv = reciprocal(
        e,
        &sums,
        ReciprocalMethod::Ours,
        Pow2Range::covering(0.5, 1.25 * n as f64),
    )?;
    Ok((num, inv))
}

/// Clamp to [lo, hi] (DDIM's x0 clipping):
///   y = x + [x < lo] (lo - x) + [x >= hi] (hi - x).
///
/// Two reduced-width comparisons in one batch and two selects in one batch; no truncation, so
/// the result is exact except within `resolution` of an edge, where either answer moves the
/// value by less than `resolution`. Domain: |x| < `bound`; beyond it the comparisons are
/// undefined.
pub fn clamp<E: FxpOps>(
    e: &E,
    x: &E::A,
    lo: f64,
    hi: f64,
    bound: f64,
    resolution: f64,
) -> Result<E::A, NonlinearError> {
    if !lo.is_finite() || !hi.is_finite() || lo > hi {
        return Err(NonlinearError::Range {
            op: "clamp",
            detail: format!("empty or infinite range [{lo}, {hi}]"),
        });
    }
    let edge = |below: f64| Threshold {
        below,
        bound: bound + below.abs(),
        resolution,
    };
    let bits = e.less_than(&[(x, edge(lo)), (x, edge(hi))])?;
    let at_or_above_hi = e.not(&bits[1]);
    let neg = e.neg(x);
    let to_lo = e.add_const(&neg, lo);
    let to_hi = e.add_const(&neg, hi);
    let moves = e.select(&[(&bits[0], &to_lo), (&at_or_above_hi, &to_hi)])?;
    e.add(&e.add(x, &moves[0])?, &moves[1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpc::nonlinear::Twin;

    #[test]
    fn silu_fine_is_within_3e_4_of_silu() {
        let tw = Twin::new(18);
        let x: Vec<f64> = (-4000..=4000)
            .map(|i| i as f64 / 200.0)
            .chain([-500.0, 300.0])
            .collect();
        let y = tw.decode(&silu_fine(&tw, &tw.encode(&x), 1024.0).unwrap());
        let mut worst = 0.0f64;
        for (a, b) in x.iter().zip(&y) {
            worst = worst.max((a / (1.0 + (-a).exp()) - b).abs());
        }
        assert!(worst < 3e-4, "max error {worst}");
        // The fit itself, without fixed point.
        let fit = (0..=4500)
            .map(|i| -0.125 + i as f64 / 400.0)
            .map(|t| (SILU_FINE_G.eval_f64(t) - t / (1.0 + t.exp())).abs())
            .fold(0.0, f64::max);
        assert!(fit < 2.7e-4, "fit error {fit}");
    }

    #[test]
    fn bounded_exp_fit_moves_a_row_of_196_by_at_most_5_3e_4() {
        let grid = (0..=32_125).map(|i| -32.0 + i as f64 / 1000.0);
        let (mut row, mut abs, mut rel3, mut tail) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for x in grid {
            let err = (BOUNDED_EXP_ROOT.eval_f64(x).powi(8) - x.exp()).abs();
            // 195 entries at x next to the row's max: the sum's relative error.
            row = row.max(195.0 * err / (1.0 + 195.0 * x.exp()));
            abs = abs.max(err);
            if x >= -3.0 {
                rel3 = rel3.max(err / x.exp());
            } else if x < -5.3 {
                tail = tail.max(err);
            }
        }
        // The equioscillating optimum is 5.23e-4 (scripts/fit/exp_root.py); the quintic this
        // replaced was at 7.1e-3, its relative error above -3 at 1.4e-4.
        assert!(row < 5.3e-4, "row-sum error {row}");
        assert!(abs < 6e-4, "absolute error {abs}");
        assert!(rel3 < 5.5e-4, "relative error above -3 {rel3}");
        assert!(tail < 5e-6, "absolute error below -5.3 {tail}");
    }

    #[test]
    fn twin_softmax_bounded_is_within_4_5e_4_of_softmax() {
        use mpc::nonlinear::softmax::softmax_exact;
        let tw = Twin::new(18);
        // Rows of 196 like cipherdm-mnist's attention: spreads up to 30, one peaked row, a flat
        // one, a row at the score limit, and one with 195 entries where the fit's error weighs
        // most (-9.25 below the max, all with the same sign of error).
        let n = 196;
        let mut x = Vec::new();
        for r in 0..7 {
            for j in 0..n {
                let v = match r {
                    0 => ((j * 37 % 101) as f64 / 100.0 - 0.5) * 30.0,
                    1 => {
                        if j == 7 {
                            9.0
                        } else {
                            (j % 13) as f64 * 0.1
                        }
                    }
                    2 => 0.25,
                    3 => -15.5 + 31.0 * (j as f64 / (n - 1) as f64),
                    4 => {
                        if j == 0 {
                            4.0
                        } else {
                            4.0 - 9.25
                        }
                    }
                    _ => ((j * (r + 3)) as f64).sin() * 6.0,
                };
                x.push(v);
            }
        }
        let (num, inv) = softmax_bounded(&tw, &tw.encode(&x), n).unwrap();
        let (num, inv) = (tw.decode(&num), tw.decode(&inv));
        let want = softmax_exact(&x, n);
        let row_error = |r: usize| {
            (r * n..(r + 1) * n)
                .map(|i| (num[i] * inv[i / n] - want[i]).abs())
                .fold(0.0, f64::max)
        };
        let errors: Vec<f64> = (0..7).map(row_error).collect();
        eprintln!("twin softmax_bounded: max error per row {errors:?}");
        // The fit bounds an entry's error by about 2 x 5.2e-4 (see BOUNDED_EXP_ROOT); 3.4e-4
        // measured on the peaked row.
        for (r, err) in errors.iter().enumerate().filter(|&(r, _)| r != 4) {
            assert!(*err < 4.5e-4, "row {r}: max error {err}");
        }
        // The clustered row: 5.1e-4 from the fit (in f64), 4.6e-4 measured at f = 24; at f = 18
        // the twin's round-to-nearest errs the same way for all 195 equal entries, about 0.4 ulp
        // each, which adds 3.4e-4. (Secure truncation is unbiased, so there it averages out.)
        assert!(errors[4] < 9e-4, "clustered row: max error {}", errors[4]);
        assert!(softmax_bounded(&tw, &tw.encode(&x), 197).is_err());
    }

    #[test]
    fn twin_clamp_clips_both_edges_exactly() {
        let tw = Twin::new(18);
        let x = [-500.0, -1.5, -1.0, -0.25, 0.0, 0.999, 1.0, 3.0, 1200.0];
        let y = tw.decode(&clamp(&tw, &tw.encode(&x), -1.0, 1.0, 16384.0, 1.0 / 4096.0).unwrap());
        for (a, b) in x.iter().zip(&y) {
            assert!((a.clamp(-1.0, 1.0) - b).abs() < 1e-5, "{a} -> {b}");
        }
        assert!(clamp(&tw, &tw.encode(&x), 1.0, -1.0, 16.0, 0.1).is_err());
    }
}
