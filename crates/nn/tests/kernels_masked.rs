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
