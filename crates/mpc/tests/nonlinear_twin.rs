//! The plaintext twins against exact f64 functions: each function's stated error bound over its
//! stated domain, the edges (masks, saturation, method names). The secure protocols are checked
//! against the same bounds (and against these twins) in `nonlinear_secure.rs`.

use mpc::nonlinear::catalog::{ErrorStats, Op};
use mpc::nonlinear::exp::ExpMethod;
use mpc::nonlinear::reciprocal::{
    reciprocal_f64, rsqrt_f64, Pow2Range, ReciprocalMethod, RsqrtMethod,
};
use mpc::nonlinear::softmax::{softmax_f64, SoftmaxMethod};
use mpc::nonlinear::{activations::*, NonlinearError, Twin};

const F: u32 = 18;
const ULP: f64 = 1.0 / (1u64 << F) as f64;

/// Twin errors of `op` over its accuracy inputs (inputs rounded to the grid first, so the
/// reference sees the same numbers).
fn twin_errors(op: Op, n: usize) -> ErrorStats {
    let tw = Twin::new(F);
    let x = tw.decode(&tw.encode(&op.accuracy_inputs(n, 7)));
    let y = tw.decode(&op.run(&tw, &tw.encode(&x)).unwrap());
    ErrorStats::of(&y, &op.exact(&x))
}

#[test]
fn every_default_method_meets_its_stated_bound() {
    // (function, max abs error): the bounds in the module docs and the table.
    let bounds = [
        ("exp", 2.8e-4),
        ("sigmoid", 4e-4),
        ("tanh", 8e-4),
        ("silu", 1.5e-3),
        ("gelu", 4.7e-3),
        ("softmax", 2e-4),
        ("group_norm", 1e-3),
        ("layer_norm", 1e-3),
    ];
    for (f, bound) in bounds {
        let op = Op::parse(f, None).unwrap();
        let s = twin_errors(op, 20001);
        assert!(
            s.max_abs <= bound,
            "{f}: max abs error {:.3e} > {bound:.1e}",
            s.max_abs
        );
    }
}

#[test]
fn paper_methods_reproduce_the_papers_errors() {
    // CipherDM's published coefficients: Table 3 exp is off by 4.8e-2 at x = 0, Eq. 6 SiLU by
    // 7.5e-2 and Eq. 7 Mish by 1.3e-1 at x = 6 (the grid may miss the exact worst point).
    let s = twin_errors(Op::Exp(ExpMethod::CipherdmChebyshev), 20001);
    assert!((0.045..0.05).contains(&s.max_abs), "{s:?}");
    let s = twin_errors(Op::Silu(SiluMethod::Cipherdm), 20001);
    assert!((0.06..0.08).contains(&s.max_abs), "{s:?}");
    let s = twin_errors(Op::Mish(MishMethod::Cipherdm), 20001);
    assert!((0.08..0.14).contains(&s.max_abs), "{s:?}");
    // CrypTen's limit exp: about 1.4e-3.
    let s = twin_errors(Op::Exp(ExpMethod::CryptenLimit), 20001);
    assert!((1e-3..2e-3).contains(&s.max_abs), "{s:?}");
}

/// 1e-3 relative or 4 ulp, whichever is larger.
fn within_rel_or_ulp(got: f64, want: f64) -> bool {
    (got - want).abs() <= (1e-3 * want.abs()).max(4.0 * ULP)
}

fn log_grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| (lo.ln() + (hi.ln() - lo.ln()) * i as f64 / (n - 1) as f64).exp())
        .collect()
}

#[test]
fn reciprocal_and_rsqrt_hold_over_wide_ranges_where_crypten_fails() {
    let tw = Twin::new(F);
    let x = tw.decode(&tw.encode(&log_grid(1e-3, 1e4, 4001)));
    let y = reciprocal_f64(&x, ReciprocalMethod::Ours, Pow2Range::RECIPROCAL, F).unwrap();
    for (xi, yi) in x.iter().zip(&y) {
        assert!(within_rel_or_ulp(*yi, 1.0 / xi), "1/{xi}: {yi}");
    }
    let x = tw.decode(&tw.encode(&log_grid(1e-4, 1e6, 4001)));
    let y = rsqrt_f64(&x, RsqrtMethod::Ours, Pow2Range::RSQRT, F).unwrap();
    for (xi, yi) in x.iter().zip(&y) {
        assert!(within_rel_or_ulp(*yi, 1.0 / xi.sqrt()), "rsqrt {xi}: {yi}");
    }
    // CrypTen's: fine on [0.1, 10], broken at 1000 (PIDM Figure 2); at f = 18 its reciprocal is
    // already 1.6% off at 100, where y^2 has only 26 ulps.
    let ok = [0.1, 1.0, 10.0];
    let c = reciprocal_f64(&ok, ReciprocalMethod::Crypten, Pow2Range::RECIPROCAL, F).unwrap();
    assert!(
        ok.iter().zip(&c).all(|(x, y)| (y * x - 1.0).abs() < 1e-2),
        "{c:?}"
    );
    let c = reciprocal_f64(
        &[1000.0],
        ReciprocalMethod::Crypten,
        Pow2Range::RECIPROCAL,
        F,
    )
    .unwrap();
    assert!(
        (c[0] * 1000.0 - 1.0).abs() > 0.1,
        "crypten 1/1000 = {}",
        c[0]
    );
    let ok = [0.1, 1.0, 10.0, 50.0];
    let c = rsqrt_f64(&ok, RsqrtMethod::Crypten, Pow2Range::RSQRT, F).unwrap();
    assert!(
        ok.iter()
            .zip(&c)
            .all(|(x, y)| (y * x.sqrt() - 1.0).abs() < 1e-2),
        "{c:?}"
    );
    let c = rsqrt_f64(&[1000.0], RsqrtMethod::Crypten, Pow2Range::RSQRT, F).unwrap();
    assert!(
        (c[0] * 1000f64.sqrt() - 1.0).abs() > 0.1,
        "crypten rsqrt(1000) = {}",
        c[0]
    );
}

#[test]
fn activations_saturate_exactly_outside_the_polynomial_range() {
    let x = [-1000.0, -50.0, -9.5, 9.5, 50.0, 1000.0];
    let y = silu_f64(&x, SiluMethod::Ours, F).unwrap();
    assert_eq!(&y, &[0.0, 0.0, 0.0, 9.5, 50.0, 1000.0]);
    let y = gelu_f64(&x, GeluMethod::PiecewisePoly, F).unwrap();
    assert_eq!(&y, &[0.0, 0.0, 0.0, 9.5, 50.0, 1000.0]);
    let s = mpc::nonlinear::sigmoid::sigmoid_f64(&x, Default::default(), F).unwrap();
    assert_eq!(&s, &[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
}

#[test]
fn softmax_rows_of_attention_sizes_with_a_causal_mask() {
    for n in [4096, 196, 49] {
        let op = Op::Softmax(SoftmaxMethod::Ours, n);
        let x = op.bench_inputs(4 * n, 11);
        let y = softmax_f64(&x, n, None, SoftmaxMethod::Ours, F).unwrap();
        let s = ErrorStats::of(&y, &mpc::nonlinear::softmax::softmax_exact(&x, n));
        assert!(s.max_abs < 2e-4, "rows of {n}: {s:?}");
        for row in y.chunks(n) {
            let sum: f64 = row.iter().sum();
            assert!((sum - 1.0).abs() < 2e-3, "row of {n} sums to {sum}");
        }
    }
    // A causal mask on 7 x 7 scores: masked entries get exactly 0, the rest a valid softmax.
    let n = 7;
    let mask: Vec<f64> = (0..n * n)
        .map(|i| if i % n > i / n { -1e4 } else { 0.0 })
        .collect();
    let x: Vec<f64> = (0..n * n)
        .map(|i| ((i * 37) % 11) as f64 * 0.3 - 1.5)
        .collect();
    for m in SoftmaxMethod::all() {
        let y = softmax_f64(&x, n, Some(&mask), m, F).unwrap();
        for (i, v) in y.iter().enumerate() {
            if mask[i] < 0.0 {
                assert_eq!(*v, 0.0, "{m}: masked entry {i} = {v}");
            }
        }
        assert!(
            (y[0] - 1.0).abs() < 2e-3,
            "{m}: the first row has one entry: {}",
            y[0]
        );
    }
}

#[test]
fn cipherdm_softmax_breaks_on_long_rows_but_not_short_ones() {
    // Table 3's exp errs by up to 4.8e-2 everywhere on [-14, 0]; summed over 4096 entries the
    // error swamps the true sum. On rows of 49 the damage is bounded.
    let n = 49;
    let op = Op::Softmax(SoftmaxMethod::Cipherdm, n);
    let x = op.bench_inputs(4 * n, 3);
    let y = softmax_f64(&x, n, None, SoftmaxMethod::Cipherdm, F).unwrap();
    let s = ErrorStats::of(&y, &mpc::nonlinear::softmax::softmax_exact(&x, n));
    assert!(s.max_abs < 0.2, "{s:?}");
    let s = twin_errors(Op::Softmax(SoftmaxMethod::Cipherdm, 4096), 8192);
    assert!(s.max_abs > 1.0, "{s:?}");
}

#[test]
fn norms_with_tiny_and_huge_variances() {
    use mpc::nonlinear::norm::*;
    let tw = Twin::new(F);
    // One group of tiny values (variance ~1e-4), one of large values (variance ~1e4).
    let (c, s) = (4, 8);
    let x: Vec<f64> = (0..c * s * s)
        .map(|i| {
            let v = ((i * 7919) % 101) as f64 / 50.0 - 1.0;
            if i < c * s * s / 2 {
                0.01 * v + 0.3
            } else {
                100.0 * v
            }
        })
        .collect();
    let gamma = [1.0, 0.5, 2.0, -1.0];
    let beta = [0.0, 0.1, -0.2, 0.3];
    let want = group_norm_exact(
        &tw.decode(&tw.encode(&x)),
        [1, c, s, s],
        2,
        &gamma,
        &beta,
        1e-6,
    );
    for (m, bound) in [(NormMethod::Fused, 2e-3), (NormMethod::Plain, 0.1)] {
        let aff = NormAffine::Public {
            gamma: &gamma,
            beta: &beta,
        };
        let y = group_norm(&tw, &tw.encode(&x), [1, c, s, s], 2, aff, 1e-6, m).unwrap();
        let e = ErrorStats::of(&tw.decode(&y), &want);
        assert!(e.max_abs < bound, "{m}: {e:?}");
    }
}

#[test]
fn method_names_parse_and_unknown_names_are_errors() {
    for op in Op::all() {
        let again = Op::parse(op.function(), Some(op.method())).unwrap();
        assert_eq!(again.method(), op.method());
    }
    assert!(matches!(
        Op::parse("silu", Some("magic")),
        Err(NonlinearError::UnknownMethod { .. })
    ));
    assert!(Op::parse("cosh", None).is_err());
}

#[test]
fn shape_errors_are_errors_not_panics() {
    let tw = Twin::new(F);
    let x = tw.encode(&[1.0; 10]);
    assert!(mpc::nonlinear::softmax::softmax(&tw, &x, 3, None, SoftmaxMethod::Ours, 16.0).is_err());
    assert!(mpc::nonlinear::softmax::softmax(
        &tw,
        &x,
        5,
        Some(&[0.0; 3]),
        SoftmaxMethod::Ours,
        16.0
    )
    .is_err());
    let aff = mpc::nonlinear::norm::NormAffine::None;
    assert!(mpc::nonlinear::norm::group_norm(
        &tw,
        &x,
        [1, 3, 2, 2],
        2,
        aff,
        1e-5,
        Default::default()
    )
    .is_err());
}

#[test]
fn norms_with_secret_affine_parameters_match_public_ones() {
    use mpc::nonlinear::norm::*;
    let tw = Twin::new(F);
    let (c, s) = (4, 4);
    let x: Vec<f64> = (0..2 * c * s * s)
        .map(|i| ((i * 31) % 17) as f64 * 0.2 - 1.5)
        .collect();
    let (gamma, beta) = ([1.0, 0.5, 2.0, -1.0], [0.0, 0.1, -0.2, 0.3]);
    let xe = tw.encode(&x);
    let (g, b) = (tw.encode(&gamma), tw.encode(&beta));
    let aff = |secret: bool| {
        if secret {
            NormAffine::Shared {
                gamma: &g,
                beta: &b,
            }
        } else {
            NormAffine::Public {
                gamma: &gamma,
                beta: &beta,
            }
        }
    };
    let want = group_norm_exact(&tw.decode(&xe), [2, c, s, s], 2, &gamma, &beta, 1e-5);
    for secret in [false, true] {
        let y = group_norm(
            &tw,
            &xe,
            [2, c, s, s],
            2,
            aff(secret),
            1e-5,
            NormMethod::Fused,
        )
        .unwrap();
        let e = ErrorStats::of(&tw.decode(&y), &want);
        assert!(
            e.max_abs < 1e-3,
            "group_norm (secret affine: {secret}): {e:?}"
        );
    }
    let want = layer_norm_exact(&tw.decode(&xe), c, &gamma, &beta, 1e-5);
    for secret in [false, true] {
        let y = layer_norm(&tw, &xe, c, aff(secret), 1e-5, NormMethod::Fused).unwrap();
        let e = ErrorStats::of(&tw.decode(&y), &want);
        assert!(
            e.max_abs < 1e-3,
            "layer_norm (secret affine: {secret}): {e:?}"
        );
    }
}
