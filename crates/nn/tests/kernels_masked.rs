//! The backends' own kernels (crates/nn/src/mpc/kernels.rs) send nothing in the clear: run on
//! all-zero secrets, every message a party receives must look uniformly random (the check of
//! the protocol core's `no_protocol_sends_anything_unmasked`, with its harness).

#[path = "../../mpc/tests/common/mod.rs"]
mod mpc_common;

use mpc::nonlinear::secure::Secure;
use mpc::TruncMethod;
use mpc_common::{assert_masked, cfg, run};
use nn::mpc::kernels::{clamp, silu_fine, softmax_bounded};
use ring::RingTensor;

#[test]
fn kernels_send_nothing_unmasked() {
    // 256 rows, so that even the per-row messages (the max tree's last level, the reciprocal)
    // and the packed bit planes are long enough for the balance check to be sharp.
    let z = RingTensor::zeros(&[196 * 256]);
    for m in [TruncMethod::Fast, TruncMethod::Robust] {
        let outs = run(cfg(m), std::slice::from_ref(&z), |p, s| {
            let e = Secure::new(p);
            let map = |err: mpc::nonlinear::NonlinearError| {
                mpc::MpcError::invalid("kernel", err.to_string())
            };
            softmax_bounded(&e, &s[0], 196).map_err(map)?;
            silu_fine(&e, &s[0], 1024.0).map_err(map)?;
            clamp(&e, &s[0], -1.0, 1.0, 16384.0, 1.0 / 4096.0).map_err(map)?;
            Ok(())
        });
        for (i, o) in outs.iter().enumerate() {
            assert!(!o.received.is_empty());
            assert_masked(&o.received, &format!("{m} at P{i}"));
        }
    }
}

/// `softmax_bounded`'s metered bytes are what its protocol calls state (the twin's call log
/// priced by the core's cost statements), and match the figure in its documentation (about 184
/// bytes per score at rows of 196); rounds per party as metered, fixed by the shape.
#[test]
fn softmax_bounded_costs_what_it_states() {
    use mpc::nonlinear::cost::stated_cost;
    use mpc::nonlinear::Twin;
    let (n, rows) = (196, 16);
    let x: Vec<f64> = (0..n * rows)
        .map(|i| ((i * 7919 % 1000) as f64 / 1000.0 - 0.5) * 20.0)
        .collect();
    let tw = Twin::new(18);
    softmax_bounded(&tw, &tw.encode(&x), n).unwrap();
    let stated = stated_cost(&tw.take_log(), 18, TruncMethod::Robust).unwrap();
    let enc = ring::FixedPoint::new(18);
    let input = RingTensor::new(&[n * rows], enc.encode_slice(&x).unwrap()).unwrap();
    let outs = run(cfg(TruncMethod::Robust), &[input], |p, s| {
        softmax_bounded(&Secure::new(p), &s[0], n)
            .map_err(|e| mpc::MpcError::invalid("kernel", e.to_string()))
    });
    let metered: u64 = outs.iter().map(|o| o.bytes).sum();
    assert_eq!(metered, stated.bytes);
    let per_score = metered as f64 / (n * rows) as f64;
    eprintln!(
        "softmax_bounded: {per_score:.2} bytes per score, rounds {:?}",
        outs.iter().map(|o| o.rounds).collect::<Vec<_>>()
    );
    assert!((180.0..188.0).contains(&per_score), "{per_score}");
    let rounds: Vec<u64> = outs.iter().map(|o| o.rounds).collect();
    assert_eq!(rounds, [72, 72, 72]);
}
