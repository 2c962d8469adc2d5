//! The encrypted step in each form against the plaintext step, and bad COO input.

use he::bench::bench_latent;
use he::coo::Coo;
use he::split::{min_distortion_split, Split};
use he::step::{client_encrypt, client_merge, server_update, EncryptedLatent, StepCoefficients};
use he::{CkksContext, ClientKeys, Error, Packing, Preset};

fn wave(n: usize, f: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (i as f32 * f).sin() * 1.5 + (i as f32 * 0.37).cos() * 0.4)
        .collect()
}

#[test]
fn ddim_and_ddpm_steps_match_plaintext_in_every_form() {
    let ctx = CkksContext::from_preset(Preset::HeDiff).unwrap();
    let keys = ClientKeys::generate(&ctx).unwrap();
    let shape = [2, 1, 28, 28];
    let x = wave(2 * 784, 0.11);
    let eps = wave(2 * 784, 0.23);
    // Linear-schedule alpha-bars at t = 981 and t = 961, and DDPM at t = 500.
    let coeffs = [
        StepCoefficients::ddim(0.000_063_6, 0.000_090_2),
        StepCoefficients::ddpm_mean(0.0100, 0.0784),
    ];
    for coeff in coeffs {
        let want = coeff.apply(&x, &eps);
        let splits = [
            (
                min_distortion_split(&x, &shape, 0.01).unwrap(),
                Packing::Dense,
            ),
            (Split::all_encrypted(x.len()).unwrap(), Packing::Dense),
        ];
        for (split, packing) in splits {
            let sent = client_encrypt(&keys, &x, &shape, &split, packing).unwrap();
            // Through the wire format in both directions.
            let at_server = EncryptedLatent::from_bytes(&ctx, &sent.to_bytes().unwrap()).unwrap();
            let back = server_update(&ctx, coeff, &at_server, &eps).unwrap();
            let at_client = EncryptedLatent::from_bytes(&ctx, &back.to_bytes().unwrap()).unwrap();
            let got = client_merge(&keys, &at_client).unwrap();
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 1e-3, "{coeff:?}: error {err}");
        }
    }
}

#[test]
fn bench_forms_agree_and_count_ciphertexts() {
    let ctx = CkksContext::from_preset(Preset::HeDiff).unwrap();
    let keys = ClientKeys::generate(&ctx).unwrap();
    let shape = [1, 1, 28, 28];
    let x = wave(784, 0.13);
    let eps = wave(784, 0.29);
    let r = bench_latent(
        &keys,
        "test",
        &shape,
        &x,
        &eps,
        StepCoefficients::ddim(0.5, 0.6),
        0.01,
        Some(16),
    )
    .unwrap();
    assert_eq!(r.ciphertexts_packed, 1);
    assert_eq!(r.ciphertexts_sparse, 1);
    assert_eq!(r.every_element_measured, 16);
    assert!(r.every_element_extrapolated);
    assert!(r.max_error_every_element < 1e-3);
    assert!(r.max_error_packed < 1e-3);
    assert!(r.max_error_sparse < 1e-3);
    assert!(r.encrypted_fraction > 0.5 && r.encrypted_fraction < 1.0);
}

#[test]
fn encrypted_latent_with_bad_coo_is_rejected() {
    let ctx = CkksContext::from_preset(Preset::HeDiff).unwrap();
    let keys = ClientKeys::generate(&ctx).unwrap();
    let shape = [1, 1, 4, 4];
    let x = wave(16, 0.5);
    let split = Split {
        numel: 16,
        encrypted: vec![1, 3, 5, 7],
    };
    let good = client_encrypt(&keys, &x, &shape, &split, Packing::Dense).unwrap();
    let bytes = good.to_bytes().unwrap();
    // Layout: magic(4) version(2) shape(8 + 4*8) indices(8 + 4*4) ...
    let idx_at = 4 + 2 + 8 + 4 * 8 + 8;
    let with_index = |k: usize, v: u32| {
        let mut b = bytes.clone();
        b[idx_at + 4 * k..idx_at + 4 * k + 4].copy_from_slice(&v.to_le_bytes());
        EncryptedLatent::from_bytes(&ctx, &b)
    };
    assert!(with_index(3, 7).is_ok());
    match with_index(3, 16) {
        Err(Error::Coo(m)) => assert!(m.contains("out of range"), "{m}"),
        other => panic!("out-of-range index: {:?}", other.err()),
    }
    match with_index(2, 3) {
        Err(Error::Coo(m)) => assert!(m.contains("duplicate"), "{m}"),
        other => panic!("duplicate index: {:?}", other.err()),
    }
    // A plaintext part of the wrong size.
    let y = Coo::new(
        shape.to_vec(),
        vec![1, 3, 5, 7],
        keys.encrypt(&[0.0; 4], Packing::Dense).unwrap(),
    )
    .unwrap();
    let short = EncryptedLatent {
        y,
        z: vec![0.0; 11],
    };
    assert!(matches!(
        EncryptedLatent::from_bytes(&ctx, &short.to_bytes().unwrap()),
        Err(Error::Shape { .. })
    ));
}
