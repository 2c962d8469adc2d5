//! CKKS interface: precision of the round trip and of the server's affine update against the
//! plaintext computation, and every bad input giving its own error.

use he::{CkksContext, CkksParams, ClientKeys, Error, Packing, Preset};

/// Deterministic pseudo-random values in [-r, r] (a latent-like range).
fn values(n: usize, seed: u64, r: f64) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * r
        })
        .collect()
}

fn max_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn presets_have_the_stated_parameters() {
    let p = CkksParams::preset(Preset::HeDiff).unwrap();
    assert_eq!(p.poly_degree, 8192);
    let bits: Vec<u32> = p.moduli.iter().map(|q| 64 - q.leading_zeros()).collect();
    assert_eq!(bits, vec![31, 26, 26, 26, 26, 26, 26, 31]);
    assert_eq!(p.scale(), 2f64.powi(26));
    assert_eq!(CkksParams::from_bytes(&p.to_bytes()).unwrap(), p);
    let q = CkksParams::preset(Preset::Precise).unwrap();
    assert_ne!(p.fingerprint(), q.fingerprint());
}

#[test]
fn round_trip_and_affine_update_match_plaintext_at_default_preset() {
    let ctx = CkksContext::from_preset(Preset::HeDiff).unwrap();
    let keys = ClientKeys::generate(&ctx).unwrap();
    // Three ciphertexts' worth, the last one partly filled.
    let y = values(2 * ctx.slots() + 1234, 1, 4.0);
    let enc = keys.encrypt(&y, Packing::Dense).unwrap();
    assert_eq!(enc.ciphertext_count(), 3);
    let back = keys.decrypt(&enc).unwrap();
    let e = max_err(&back, &y);
    assert!(e < 1e-3, "round trip error {e}");

    // The DDIM step from t=981 to t=961 of a linear schedule has a ~ 1.2; use a generic a and b*eps.
    let (a, b) = (1.0213, -0.3371);
    let eps = values(y.len(), 2, 4.0);
    let b_eps: Vec<f64> = eps.iter().map(|e| b * e).collect();
    // Through the wire format, as the server sees it.
    let received = ctx.load_vector(&enc.to_bytes().unwrap()).unwrap();
    let updated = ctx.affine(&received, a, &b_eps).unwrap();
    assert_eq!(updated.scale_power(), 2);
    let returned = ctx.load_vector(&updated.to_bytes().unwrap()).unwrap();
    let got = keys.decrypt(&returned).unwrap();
    let want: Vec<f64> = y.iter().zip(&b_eps).map(|(y, be)| a * y + be).collect();
    let e = max_err(&got, &want);
    assert!(e < 1e-3, "affine update error {e}");
}

#[test]
fn precise_preset_is_more_precise() {
    let ctx = CkksContext::from_preset(Preset::Precise).unwrap();
    let keys = ClientKeys::generate(&ctx).unwrap();
    let y = values(1000, 3, 4.0);
    let p = values(1000, 4, 4.0);
    let got = keys
        .decrypt(
            &ctx.affine(&keys.encrypt(&y, Packing::Dense).unwrap(), 0.9, &p)
                .unwrap(),
        )
        .unwrap();
    let want: Vec<f64> = y.iter().zip(&p).map(|(y, p)| 0.9 * y + p).collect();
    let e = max_err(&got, &want);
    assert!(e < 1e-7, "precise preset error {e}");
}

#[test]
fn one_value_per_ciphertext_packing() {
    let ctx = CkksContext::from_preset(Preset::HeDiff).unwrap();
    let keys = ClientKeys::generate(&ctx).unwrap();
    let y = values(5, 5, 2.0);
    let enc = keys.encrypt(&y, Packing::OnePerCiphertext).unwrap();
    assert_eq!(enc.ciphertext_count(), 5);
    let p = values(5, 6, 1.0);
    let got = keys.decrypt(&ctx.affine(&enc, 1.5, &p).unwrap()).unwrap();
    let want: Vec<f64> = y.iter().zip(&p).map(|(y, p)| 1.5 * y + p).collect();
    assert!(max_err(&got, &want) < 1e-3);
}

#[test]
fn ciphertext_under_a_foreign_key_is_rejected() {
    let ctx = CkksContext::from_preset(Preset::HeDiff).unwrap();
    let mine = ClientKeys::generate(&ctx).unwrap();
    let theirs = ClientKeys::generate(&ctx).unwrap();
    let enc = theirs
        .encrypt(&values(100, 7, 1.0), Packing::Dense)
        .unwrap();
    assert!(matches!(mine.decrypt(&enc), Err(Error::ForeignKey { .. })));

    // A foreign ciphertext relabelled with our key id (and a recomputed checksum) still fails:
    // wrong-key decryption yields values far beyond any latent.
    let mut bytes = enc.to_bytes().unwrap();
    // Layout: magic(4) version(2) fingerprint(8) key_id(16) ...
    bytes[14..30].copy_from_slice(&mine.key_id().0);
    let n = bytes.len();
    let digest = {
        use sha2::Digest;
        sha2::Sha256::digest(&bytes[..n - 32])
    };
    bytes[n - 32..].copy_from_slice(&digest);
    let forged = ctx.load_vector(&bytes).unwrap();
    assert_eq!(forged.key_id(), mine.key_id());
    assert!(matches!(
        mine.decrypt(&forged),
        Err(Error::Implausible { .. })
    ));
}

#[test]
fn ciphertext_from_another_parameter_set_is_rejected() {
    let hediff = CkksContext::from_preset(Preset::HeDiff).unwrap();
    let precise = CkksContext::from_preset(Preset::Precise).unwrap();
    let keys = ClientKeys::generate(&precise).unwrap();
    let bytes = keys
        .encrypt(&values(10, 8, 1.0), Packing::Dense)
        .unwrap()
        .to_bytes()
        .unwrap();
    assert!(matches!(
        hediff.load_vector(&bytes),
        Err(Error::ParameterMismatch { .. })
    ));
    // And operating on it with the wrong context is refused too.
    let enc = keys.encrypt(&values(10, 8, 1.0), Packing::Dense).unwrap();
    assert!(matches!(
        hediff.mul_scalar(&enc, 2.0),
        Err(Error::ParameterMismatch { .. })
    ));
}

#[test]
fn corrupted_and_truncated_ciphertexts_are_errors() {
    let ctx = CkksContext::from_preset(Preset::HeDiff).unwrap();
    let keys = ClientKeys::generate(&ctx).unwrap();
    let bytes = keys
        .encrypt(&values(5000, 9, 1.0), Packing::Dense)
        .unwrap()
        .to_bytes()
        .unwrap();
    // Every truncation point in the header and a spread of them in the payload.
    let cuts = (0..64).chain((64..bytes.len()).step_by(bytes.len() / 50));
    for cut in cuts {
        match ctx.load_vector(&bytes[..cut]) {
            Err(Error::Truncated { .. } | Error::Corrupt { .. }) => {}
            Err(e) => panic!("cut at {cut}: unexpected error kind {e}"),
            Ok(_) => panic!("cut at {cut}: truncated vector accepted"),
        }
    }
    // Single flipped bits anywhere, including the lowest bit of a payload byte.
    for pos in (0..bytes.len()).step_by(bytes.len() / 40) {
        let mut bad = bytes.clone();
        bad[pos] ^= 1;
        assert!(ctx.load_vector(&bad).is_err(), "flip at {pos} accepted");
    }
    // Garbage with a valid checksum: SEAL's own validation must turn it into an error.
    let mut garbage = bytes.clone();
    let payload_start = 4 + 2 + 8 + 16 + 8 + 8 + 1 + 4 + 4;
    for b in &mut garbage[payload_start + 16..payload_start + 400] {
        *b = 0xAB;
    }
    let n = garbage.len();
    let digest = {
        use sha2::Digest;
        sha2::Sha256::digest(&garbage[..n - 32])
    };
    garbage[n - 32..].copy_from_slice(&digest);
    match ctx.load_vector(&garbage) {
        Err(Error::Corrupt { .. }) => {}
        other => panic!("garbage ciphertext: {:?}", other.map(|_| ())),
    }
}

#[test]
fn second_product_is_a_scale_mismatch() {
    let ctx = CkksContext::from_preset(Preset::HeDiff).unwrap();
    let keys = ClientKeys::generate(&ctx).unwrap();
    let enc = keys.encrypt(&[1.0, 2.0], Packing::Dense).unwrap();
    let once = ctx.mul_scalar(&enc, 2.0).unwrap();
    assert!(matches!(
        ctx.mul_scalar(&once, 2.0),
        Err(Error::ScaleMismatch { .. })
    ));
    assert!(matches!(
        ctx.add_plain(&once, &[1.0]),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn bad_parameter_blobs_are_rejected() {
    let p = CkksParams::preset(Preset::HeDiff).unwrap();
    let bytes = p.to_bytes();
    assert!(CkksParams::from_bytes(&bytes[..bytes.len() - 3]).is_err());
    let mut weak = p.clone();
    weak.scale_bits = 80;
    assert!(matches!(weak.validate(), Err(Error::Parameters(_))));
    // Not NTT-friendly / not prime: SEAL refuses, we report it.
    let mut bad = p.clone();
    bad.moduli[1] = 1_000_001;
    assert!(matches!(CkksContext::new(bad), Err(Error::Parameters(_))));
    // Too many modulus bits for 128-bit security at N = 8192.
    let mut insecure = p;
    insecure.moduli = CkksParams::preset(Preset::Precise).unwrap().moduli;
    insecure
        .moduli
        .extend_from_slice(&CkksParams::preset(Preset::Precise).unwrap().moduli);
    assert!(matches!(
        CkksContext::new(insecure),
        Err(Error::Parameters(_))
    ));
}
