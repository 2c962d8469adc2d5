//! Every protocol against plaintext fixed-point arithmetic, with its stated cost checked against
//! the metered one per party.

mod common;
use common::*;

use mpc::arith::{product_cost, trunc_cost};
use mpc::boolean::{and_cost, msb_cost, SignInput};
use mpc::convert::{b2a_cost, mux_cost};
use mpc::{Cost, TruncMethod};
use rand::Rng;
use ring::{ConvPadding, RingTensor};

const METHODS: [TruncMethod; 2] = [TruncMethod::Fast, TruncMethod::Robust];

/// got must be floor(want_scaled) or floor + 1 (the standalone truncation's rounding).
fn assert_trunc_close(got: &RingTensor, exact_floor: &[i64], what: &str) {
    for (i, (&g, &w)) in got.data().iter().zip(exact_floor).enumerate() {
        let e = (g as i64).wrapping_sub(w);
        assert!(
            e == 0 || e == 1,
            "{what}: element {i}: got {} want {w} (+0/1)",
            g as i64
        );
    }
}

/// A fused product (either method): within 1.5 ulp of the exact value (R1 and R2 drop the low
/// bits of A), so floor - 1 ..= floor + 2.
fn assert_fused_close(got: &RingTensor, exact_floor: &[i64], what: &str) {
    for (i, (&g, &w)) in got.data().iter().zip(exact_floor).enumerate() {
        let e = (g as i64).wrapping_sub(w);
        assert!(
            (-1..=2).contains(&e),
            "{what}: element {i}: got {} want {w} (-1..=2)",
            g as i64
        );
    }
}

/// The fused product's stated rounding, checked against the exact products: every result
/// within 1.5 ulp of z / 2^18 and the mean error near 0 (unbiased).
fn assert_fused_rounding(got: &RingTensor, x: &RingTensor, y: &RingTensor, what: &str) {
    let mut sum = 0.0;
    for (i, &g) in got.data().iter().enumerate() {
        let z = (x.data()[i] as i64 as i128) * (y.data()[i] as i64 as i128);
        let err = ((g as i64 as i128) << 18) - z;
        assert!(
            err.abs() <= 3 << 17,
            "{what}: element {i}: error {} ulp",
            err as f64 / 2f64.powi(18)
        );
        sum += err as f64 / 2f64.powi(18);
    }
    let mean = sum / got.len() as f64;
    assert!(mean.abs() < 0.05, "{what}: mean error {mean} ulp (biased)");
}

#[test]
fn mul_matches_fixed_point_for_both_methods_at_stated_cost() {
    let mut r = rng(1);
    // Sizes below one chunk of the fused passes, several chunks (8269), enough for them to run
    // on all cores (36869, with a ragged last chunk), and several pieces of the truncation's
    // pipelined messages (600037: four whole pieces of 2^17 and a ragged fifth; small values,
    // so that the fast truncation's rare large error, likelier the more and the larger the
    // products, stays at ~1e-5 per run).
    for (n, scale) in [
        (1000usize, 1.0),
        (333, 100.0),
        (64, 1e-3),
        (8269, 1.0),
        (36_869, 10.0),
        (600_037, 0.05),
    ] {
        let a = normal(&mut r, n, scale);
        let b = normal(&mut r, n, scale);
        let (ea, eb) = (encode(&[n], &a), encode(&[n], &b));
        for m in METHODS {
            let outs = run(cfg(m), &[ea.clone(), eb.clone()], |p, s| {
                p.mul(&s[0], &s[1])
            });
            let want: Vec<i64> = ea
                .data()
                .iter()
                .zip(eb.data())
                .map(|(&x, &y)| trunc_prod(x, y, 18))
                .collect();
            let got = open(&outs);
            assert_fused_close(&got, &want, &format!("mul {m} n={n}"));
            if n > 1000 {
                assert_fused_rounding(&got, &ea, &eb, &format!("mul {m} n={n}"));
            }
            assert_cost(&outs, product_cost(n, Some((m, 18))));
        }
        let outs = run(
            cfg(TruncMethod::Robust),
            &[ea.clone(), eb.clone()],
            |p, s| p.mul_raw(&s[0], &s[1]),
        );
        let want: Vec<u64> = ea
            .data()
            .iter()
            .zip(eb.data())
            .map(|(&x, &y)| x.wrapping_mul(y))
            .collect();
        assert_eq!(open(&outs).data(), &want[..], "mul_raw n={n}");
        assert_cost(&outs, product_cost(n, None));
    }
}

#[test]
fn robust_mul_cost_per_element_and_rotation() {
    // 1M elements would take too long in a unit test; the formula is linear, so check the
    // per-element figure at n = 4096 and the stated rotation on a second call.
    let c = product_cost(1 << 20, Some((TruncMethod::Robust, 18)));
    // One 18-bit value per element from each party, plus 8 bytes from R0 and the high 46 bits
    // of A's terms from R1 and R2: 26.25 bytes per element.
    assert_eq!(c.total_bytes(), 26 * (1 << 20) + (1 << 18));
    let r = product_cost(1_000_000, Some((TruncMethod::Robust, 18)));
    assert!(r.total_bytes() <= 32_000_000 && r.latency <= 2);
    // Fast: 8 bytes from R0, the high 46 bits of A's terms from R1 and R2: 19.5 bytes.
    let f = product_cost(1_000_000, Some((TruncMethod::Fast, 18)));
    assert_eq!(f.total_bytes(), 19_500_000);
    assert!(f.total_bytes() <= 32_000_000 && f.latency <= 2);
    let n = 4096;
    let x = encode(&[n], &vec![0.5; n]);
    let outs = run(cfg(TruncMethod::Robust), &[x.clone(), x], |p, s| {
        p.mul(&s[0], &s[1])?; // nonce 0
        p.meter().reset();
        p.mul(&s[0], &s[1]) // nonce 1: rotation h = 1
    });
    let h = 1;
    let c = product_cost(n, Some((TruncMethod::Robust, 18)));
    for (p, o) in outs.iter().enumerate() {
        assert_eq!((o.bytes, o.rounds), c.for_party(p, h));
    }
    // 0.25 is exact on the grid: within the robust product's 1.5 ulp, i.e. 2^16 - 1 ..= 2^16 + 1.
    assert!(open(&outs)
        .data()
        .iter()
        .all(|&v| ((1 << 16) - 1..=(1 << 16) + 1).contains(&v)));
}

#[test]
fn broadcasting_mul_and_square() {
    let mut r = rng(2);
    let a = normal(&mut r, 12, 2.0);
    let b = normal(&mut r, 4, 2.0);
    let (ea, eb) = (encode(&[3, 4], &a), encode(&[4], &b));
    for m in METHODS {
        let outs = run(cfg(m), &[ea.clone(), eb.clone()], |p, s| {
            p.mul(&s[0], &s[1])
        });
        let want: Vec<i64> = (0..12)
            .map(|i| trunc_prod(ea.data()[i], eb.data()[i % 4], 18))
            .collect();
        assert_fused_close(&open(&outs), &want, "broadcast mul");
        let outs = run(cfg(m), std::slice::from_ref(&ea), |p, s| p.square(&s[0]));
        let want: Vec<i64> = ea.data().iter().map(|&x| trunc_prod(x, x, 18)).collect();
        assert_fused_close(&open(&outs), &want, "square");
        assert_cost(&outs, product_cost(12, Some((m, 18))));
    }
}

#[test]
fn standalone_truncation_and_public_products() {
    let mut r = rng(3);
    // 600037: several pieces of the pipelined messages, with small values (as in the mul test).
    for (n, scale) in [(500, 1.0), (36_869, 1.0), (600_037, 0.01)] {
        standalone_truncation_at(&mut r, n, scale);
    }
}

fn standalone_truncation_at(r: &mut impl Rng, n: usize, scale: f64) {
    let a = normal(r, n, 50.0 * scale);
    let c = normal(r, n, 3.0 * scale);
    let (ea, ec) = (encode(&[n], &a), encode(&[n], &c));
    for m in METHODS {
        let outs = run(cfg(m), std::slice::from_ref(&ea), |p, s| {
            p.mul_public(&s[0], &ec)
        });
        let want: Vec<i64> = ea
            .data()
            .iter()
            .zip(ec.data())
            .map(|(&x, &y)| trunc_prod(x, y, 18))
            .collect();
        assert_trunc_close(&open(&outs), &want, "mul_public");
        assert_cost(&outs, trunc_cost(n, m, 18));
        // A standalone truncation by another width.
        let outs = run(cfg(m), std::slice::from_ref(&ea), |p, s| {
            p.trunc(&s[0], 7, m)
        });
        let want: Vec<i64> = ea.data().iter().map(|&x| (x as i64) >> 7).collect();
        assert_trunc_close(&open(&outs), &want, "trunc 7");
        let outs = run(cfg(m), std::slice::from_ref(&ea), |p, s| {
            p.scale(&s[0], -0.75)
        });
        let k = fp().encode(-0.75).unwrap();
        let want: Vec<i64> = ea.data().iter().map(|&x| trunc_prod(x, k, 18)).collect();
        assert_trunc_close(&open(&outs), &want, "scale");
    }
}

fn ring_matmul_trunc(a: &RingTensor, b: &RingTensor) -> Vec<i64> {
    // Exact in i128 for small inputs, then floor by 2^18.
    let (m, k) = (a.shape()[0], a.shape()[1]);
    let n = b.shape()[1];
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let mut acc: i128 = 0;
            for kk in 0..k {
                acc +=
                    (a.data()[i * k + kk] as i64 as i128) * (b.data()[kk * n + j] as i64 as i128);
            }
            out.push((acc >> 18) as i64);
        }
    }
    out
}

#[test]
fn matmul_secret_and_public_weights() {
    let mut r = rng(4);
    let (m, k, n) = (7, 33, 5);
    let a = encode(&[m, k], &normal(&mut r, m * k, 1.0));
    let b = encode(&[k, n], &normal(&mut r, k * n, 1.0));
    let want = ring_matmul_trunc(&a, &b);
    for meth in METHODS {
        let outs = run(cfg(meth), &[a.clone(), b.clone()], |p, s| {
            p.matmul(&s[0], &s[1])
        });
        assert_fused_close(&open(&outs), &want, "matmul");
        assert_cost(&outs, product_cost(m * n, Some((meth, 18))));
        let outs = run(cfg(meth), std::slice::from_ref(&a), |p, s| {
            p.matmul_public(&s[0], &b)
        });
        assert_trunc_close(&open(&outs), &want, "matmul_public");
        assert_cost(&outs, trunc_cost(m * n, meth, 18));
    }
    // Batched (2, m, k) x (2, k, n) and (2, m, k) x (k, n).
    let a2 = RingTensor::concat(&[&a.reshape(&[1, m, k]).unwrap(); 2], 0).unwrap();
    let b2 = RingTensor::concat(&[&b.reshape(&[1, k, n]).unwrap(); 2], 0).unwrap();
    let want2: Vec<i64> = want.iter().chain(&want).copied().collect();
    let outs = run(cfg(TruncMethod::Robust), &[a2.clone(), b2], |p, s| {
        p.matmul(&s[0], &s[1])
    });
    assert_fused_close(&open(&outs), &want2, "batched matmul");
    let outs = run(cfg(TruncMethod::Robust), &[a2, b.clone()], |p, s| {
        p.matmul(&s[0], &s[1])
    });
    assert_fused_close(&open(&outs), &want2, "matmul with shared rhs");
}

#[test]
fn convolutions_secret_and_public_weights() {
    let mut r = rng(5);
    let xs = [2, 3, 6, 5];
    let ws = [4, 3, 3, 3];
    let x = encode(&xs, &normal(&mut r, 180, 1.0));
    let w = encode(&ws, &normal(&mut r, 108, 0.5));
    for (tr, stride, pad) in [
        (false, 1, ConvPadding::Same),
        (false, 2, ConvPadding::Same),
        (false, 1, ConvPadding::Explicit([1, 0, 0, 2])),
        (true, 2, ConvPadding::Same),
    ] {
        // Plaintext: ring conv of the encodings (exact: small values, no wrap), floor by 2^18.
        let raw = if tr {
            ring::conv::conv_transpose2d(&x, &w, stride, pad).unwrap()
        } else {
            ring::conv::conv2d(&x, &w, stride, pad).unwrap()
        };
        let want: Vec<i64> = raw.data().iter().map(|&v| (v as i64) >> 18).collect();
        for meth in METHODS {
            let outs = run(cfg(meth), &[x.clone(), w.clone()], |p, s| {
                if tr {
                    p.conv_transpose2d(&s[0], &s[1], stride, pad)
                } else {
                    p.conv2d(&s[0], &s[1], stride, pad)
                }
            });
            let got = open(&outs);
            assert_eq!(got.shape(), raw.shape());
            assert_fused_close(&got, &want, "conv secret");
            assert_cost(&outs, product_cost(raw.len(), Some((meth, 18))));
            let outs = run(cfg(meth), std::slice::from_ref(&x), |p, s| {
                if tr {
                    p.conv_transpose2d_public(&s[0], &w, stride, pad)
                } else {
                    p.conv2d_public(&s[0], &w, stride, pad)
                }
            });
            assert_trunc_close(&open(&outs), &want, "conv public");
            assert_cost(&outs, trunc_cost(raw.len(), meth, 18));
        }
    }
}

fn sign_bits(v: &[u64], bits: usize) -> Vec<u64> {
    v.iter().map(|&x| (x >> (bits - 1)) & 1).collect()
}

#[test]
fn msb_and_comparisons_are_exact() {
    let mut r = rng(6);
    let n = 777;
    let mut raw: Vec<u64> = (0..n).map(|_| r.gen()).collect();
    raw[0] = 0;
    raw[1] = u64::MAX;
    raw[2] = 1 << 63;
    raw[3] = (1 << 63) - 1;
    let x = RingTensor::new(&[n], raw.clone()).unwrap();
    let outs = run(cfg(TruncMethod::Fast), std::slice::from_ref(&x), |p, s| {
        p.msb(&s[0])
    });
    assert_eq!(open_bits(&outs), sign_bits(&raw, 64));
    assert_cost(&outs, msb_cost(n, 64));
    assert_eq!(msb_cost(n, 64).latency, 8);
    // Reduced width: values below 2^20 in magnitude, 21 bits.
    let small: Vec<u64> = (0..n)
        .map(|_| (r.gen_range(-(1i64 << 20) + 1..1i64 << 20)) as u64)
        .collect();
    let xs = RingTensor::new(&[n], small.clone()).unwrap();
    let outs = run(cfg(TruncMethod::Fast), std::slice::from_ref(&xs), |p, s| {
        p.msb_bounded(&s[0], 20)
    });
    assert_eq!(open_bits(&outs), sign_bits(&small, 64));
    assert_cost(&outs, msb_cost(n, 21));
    assert!(msb_cost(n, 21).total_bytes() < msb_cost(n, 64).total_bytes() / 2);
    // Comparisons between shares and with public values, on fixed-point reals.
    let a = normal(&mut r, n, 10.0);
    let b = normal(&mut r, n, 10.0);
    let (ea, eb) = (encode(&[n], &a), encode(&[n], &b));
    let want: Vec<u64> = ea
        .data()
        .iter()
        .zip(eb.data())
        .map(|(&x, &y)| ((x as i64) < (y as i64)) as u64)
        .collect();
    let outs = run(cfg(TruncMethod::Fast), &[ea.clone(), eb.clone()], |p, s| {
        p.less_than(&s[0], &s[1])
    });
    assert_eq!(open_bits(&outs), want);
    let outs = run(cfg(TruncMethod::Fast), std::slice::from_ref(&ea), |p, s| {
        p.less_than_public(&s[0], &eb)
    });
    assert_eq!(open_bits(&outs), want);
    let outs = run(cfg(TruncMethod::Fast), &[ea.clone(), eb.clone()], |p, s| {
        p.less_than_bounded(&s[0], &s[1], 30)
    });
    assert_eq!(open_bits(&outs), want);
    let outs = run(cfg(TruncMethod::Fast), std::slice::from_ref(&ea), |p, s| {
        p.less_than_scalar(&s[0], 0)
    });
    let want0: Vec<u64> = ea.data().iter().map(|&x| ((x as i64) < 0) as u64).collect();
    assert_eq!(open_bits(&outs), want0);
}

/// The reduced-width sign test on a moved input (x - c, each component shifted right), as the
/// nonlinear functions' thresholds use it: the adder that moves x while it bit-slices it (in
/// parallel chunks, on a length that ends in a partial word) gives exactly the bits of the
/// moved share formed first, at the stated cost, and they are [x < c] outside the resolution.
#[test]
fn msb_of_a_moved_input_matches_the_moved_share() {
    let mut r = rng(61);
    let n = 70_001;
    let x = normal(&mut r, n, 10.0);
    let ex = encode(&[n], &x);
    let (c, shift, bits) = (-3.25f64, 14u32, 12usize);
    let add = ((c * 2f64.powi(18)).round() as i64 as u64).wrapping_neg();
    let input = SignInput { add, shift };
    let outs = run(
        cfg(TruncMethod::Robust),
        std::slice::from_ref(&ex),
        |p, s| p.msb_bits_of(&s[0], input, bits),
    );
    assert_cost(&outs, msb_cost(n, bits));
    let fused = open_bits(&outs);
    let outs = run(
        cfg(TruncMethod::Robust),
        std::slice::from_ref(&ex),
        |p, s| p.msb_bits(&s[0].add_scalar_shifted(add, shift), bits),
    );
    assert_eq!(fused, open_bits(&outs));
    // One unit after the shift is 2^-4; the carry moves the sum by at most two of them.
    for (i, (&v, &bit)) in x.iter().zip(&fused).enumerate() {
        if (v - c).abs() > 0.2 {
            assert_eq!(bit, (v < c) as u64, "element {i}: {v} against {c}");
        }
    }
}

#[test]
fn a2b_gives_every_bit() {
    let mut r = rng(7);
    let n = 130;
    let raw: Vec<u64> = (0..n).map(|_| r.gen()).collect();
    let x = RingTensor::new(&[n], raw.clone()).unwrap();
    for bits in [64usize, 38, 17, 3, 2] {
        let mask = if bits == 64 {
            u64::MAX
        } else {
            (1 << bits) - 1
        };
        let want: Vec<u64> = raw.iter().map(|v| v & mask).collect();
        for brent_kung in [false, true] {
            let outs = run(cfg(TruncMethod::Fast), std::slice::from_ref(&x), |p, s| {
                if brent_kung {
                    p.a2b_brent_kung(&s[0], bits)
                } else {
                    p.a2b(&s[0], bits)
                }
            });
            assert_eq!(
                open_bits(&outs),
                want,
                "bits {bits}, brent-kung {brent_kung}"
            );
            if brent_kung {
                // Adder inputs as for a2b, then 24 bytes per 64 values per AND plane.
                let w = 8 * mpc::words_for(n) as u64;
                let ands: usize = mpc::boolean::brent_kung_ands(bits - 1).iter().sum();
                let total: u64 = outs.iter().map(|o| o.bytes).sum();
                let inputs = w * (bits as u64 + 2 * (bits as u64 - 1));
                assert_eq!(total, inputs + 3 * w * ands as u64, "bits {bits}");
            }
        }
    }
}

/// The mux's fused passes on a length that spans many chunks, runs on both cores and ends in a
/// partial chunk, once in each helper rotation; and its pipelined messages over several pieces
/// (300,037: two whole pieces of 2^17 and a ragged third) at exactly the stated cost.
#[test]
fn mux_over_many_chunks_and_pieces_in_every_rotation() {
    let mut r = rng(81);
    for n in [40_000 + 37, 300_037] {
        let a = normal(&mut r, n, 5.0);
        let b = normal(&mut r, n, 5.0);
        let (ea, eb) = (encode(&[n], &a), encode(&[n], &b));
        let outs = run(
            cfg(TruncMethod::Robust),
            &[ea.clone(), eb.clone()],
            |p, s| {
                let sa = p.msb(&s[0])?;
                (0..3)
                    .map(|_| {
                        p.meter().reset();
                        let h = (p.peek_nonce() % 3) as usize;
                        let v = p.mux(&sa, &s[1])?;
                        let t = p.meter().total();
                        Ok((v, h, t.bytes, t.rounds))
                    })
                    .collect::<mpc::Result<Vec<_>>>()
            },
        );
        let want: Vec<u64> = (0..n)
            .map(|i| {
                if ea.data()[i] >> 63 == 1 {
                    eb.data()[i]
                } else {
                    0
                }
            })
            .collect();
        for k in 0..3 {
            let parts: Vec<_> = outs
                .iter()
                .map(|o| mpc::OutputShare::of(&o.value[k].0))
                .collect();
            assert_eq!(
                mpc::reconstruct(&parts).unwrap().data(),
                &want[..],
                "mux #{k} of {n}"
            );
            let h = outs[0].value[k].1;
            for (p, o) in outs.iter().enumerate() {
                let (_, _, bytes, rounds) = o.value[k];
                assert_eq!(
                    (bytes, rounds),
                    mux_cost(n).for_party(p, h),
                    "mux #{k} of {n} at P{p}"
                );
            }
        }
    }
}

#[test]
fn and_b2a_mux_relu_max() {
    let mut r = rng(8);
    let n = 300;
    let a = normal(&mut r, n, 5.0);
    let b = normal(&mut r, n, 5.0);
    let (ea, eb) = (encode(&[n], &a), encode(&[n], &b));
    let sign: Vec<u64> = ea.data().iter().map(|&x| x >> 63).collect();
    // AND of two sign planes.
    let outs = run(cfg(TruncMethod::Fast), &[ea.clone(), eb.clone()], |p, s| {
        let sa = p.msb(&s[0])?;
        let sb = p.msb(&s[1])?;
        p.meter().reset();
        p.and(&sa, &sb)
    });
    let want: Vec<u64> = ea
        .data()
        .iter()
        .zip(eb.data())
        .map(|(x, y)| (x >> 63) & (y >> 63))
        .collect();
    assert_eq!(open_bits(&outs), want);
    for (p, o) in outs.iter().enumerate() {
        assert_eq!(
            (o.bytes, o.rounds),
            and_cost(n, 1).for_party(p, 0),
            "and P{p}"
        );
    }
    // B2A of the sign, metered on its own.
    let outs = run(cfg(TruncMethod::Fast), std::slice::from_ref(&ea), |p, s| {
        let sa = p.msb(&s[0])?;
        p.meter().reset();
        let h = (p.peek_nonce() % 3) as usize;
        let v = p.b2a(&sa, &[n])?;
        Ok((v, h))
    });
    let h = outs[0].value.1;
    let parts: Vec<_> = outs
        .iter()
        .map(|o| mpc::OutputShare::of(&o.value.0))
        .collect();
    assert_eq!(mpc::reconstruct(&parts).unwrap().data(), &sign[..]);
    for (p, o) in outs.iter().enumerate() {
        assert_eq!((o.bytes, o.rounds), b2a_cost(n).for_party(p, h), "b2a P{p}");
    }
    // mux and select.
    let outs = run(cfg(TruncMethod::Fast), &[ea.clone(), eb.clone()], |p, s| {
        let sa = p.msb(&s[0])?;
        p.meter().reset();
        let h = (p.peek_nonce() % 3) as usize;
        let v = p.mux(&sa, &s[1])?;
        Ok((v, h))
    });
    let h = outs[0].value.1;
    let parts: Vec<_> = outs
        .iter()
        .map(|o| mpc::OutputShare::of(&o.value.0))
        .collect();
    let want: Vec<u64> = (0..n)
        .map(|i| if sign[i] == 1 { eb.data()[i] } else { 0 })
        .collect();
    assert_eq!(mpc::reconstruct(&parts).unwrap().data(), &want[..]);
    for (p, o) in outs.iter().enumerate() {
        assert_eq!((o.bytes, o.rounds), mux_cost(n).for_party(p, h), "mux P{p}");
    }
    let outs = run(cfg(TruncMethod::Fast), &[ea.clone(), eb.clone()], |p, s| {
        let sa = p.msb(&s[0])?;
        p.select(&sa, &s[0], &s[1])
    });
    let want: Vec<u64> = (0..n)
        .map(|i| {
            if sign[i] == 1 {
                ea.data()[i]
            } else {
                eb.data()[i]
            }
        })
        .collect();
    assert_eq!(open(&outs).data(), &want[..]);
    // ReLU exact.
    let outs = run(cfg(TruncMethod::Fast), std::slice::from_ref(&ea), |p, s| {
        p.relu(&s[0])
    });
    let want: Vec<u64> = ea
        .data()
        .iter()
        .map(|&x| if (x as i64) < 0 { 0 } else { x })
        .collect();
    assert_eq!(open(&outs).data(), &want[..]);
    let outs = run(cfg(TruncMethod::Fast), std::slice::from_ref(&ea), |p, s| {
        p.relu_bounded(&s[0], 30)
    });
    assert_eq!(open(&outs).data(), &want[..]);
    // Max along each axis of a (4, 5, 3) tensor (odd and even lengths).
    let t = encode(&[4, 5, 3], &normal(&mut r, 60, 3.0));
    for axis in 0..3 {
        let outs = run(cfg(TruncMethod::Fast), std::slice::from_ref(&t), |p, s| {
            p.max_axis(&s[0], axis, false)
        });
        let got = open(&outs);
        let dims = [4usize, 5, 3];
        let st = ring::strides(&dims);
        let mut out_dims = dims.to_vec();
        out_dims.remove(axis);
        let mut want = Vec::new();
        for i in 0..dims[0] {
            for j in 0..dims[1] {
                for k in 0..dims[2] {
                    let idx = [i, j, k];
                    if idx[axis] != 0 {
                        continue;
                    }
                    let m = (0..dims[axis])
                        .map(|v| {
                            let mut ix = idx;
                            ix[axis] = v;
                            t.data()[ix[0] * st[0] + ix[1] * st[1] + ix[2] * st[2]] as i64
                        })
                        .max()
                        .unwrap();
                    want.push(m as u64);
                }
            }
        }
        assert_eq!(got.shape(), &out_dims[..]);
        assert_eq!(got.data(), &want[..], "max axis {axis}");
    }
}

#[test]
fn input_and_reveal_costs() {
    let x = encode(&[10], &[1.5; 10]);
    let outs = run(cfg(TruncMethod::Fast), &[], |p, _| {
        let v = p.input(1, (p.id() == 1).then_some(&x), &[10])?;
        let all = p.reveal_all(&v)?;
        let to2 = p.reveal_to(&v, 2)?;
        Ok((all, to2))
    });
    for (p, o) in outs.iter().enumerate() {
        assert_eq!(o.value.0, x);
        assert_eq!(o.value.1.is_some(), p == 2);
        let label = |l: &str| o.by_label.iter().find(|e| e.0 == l).map_or(0, |e| e.1);
        assert_eq!(label("input"), if p == 1 { 80 } else { 0 });
        assert_eq!(label("reveal"), 80);
        assert_eq!(label("reveal_to"), if p == 0 { 80 } else { 0 });
    }
    let _ = Cost::ZERO;
}

#[test]
fn no_protocol_sends_anything_unmasked() {
    // All-zero secrets: any opening that is not masked would show up as structured data.
    let n = 1024;
    let z = RingTensor::zeros(&[n]);
    let zm = RingTensor::zeros(&[32, 32]);
    for m in METHODS {
        let outs = run(cfg(m), &[z.clone(), z.clone(), zm.clone()], |p, s| {
            p.mul(&s[0], &s[1])?;
            p.mul_public(&s[0], &z)?;
            p.matmul(&s[2], &s[2])?;
            let b = p.msb(&s[0])?;
            p.a2b(&s[0], 64)?;
            p.b2a(&b, &[n])?;
            p.mux(&b, &s[1])?;
            p.and(&b, &b)?;
            Ok(())
        });
        for (i, o) in outs.iter().enumerate() {
            assert!(!o.received.is_empty());
            assert_masked(&o.received, &format!("{m} at P{i}"));
        }
    }
}

#[test]
fn malformed_messages_are_errors_not_panics() {
    use net::{LocalMesh, Transport};
    use std::time::Duration;
    let [a, b, c] = LocalMesh::triple(Duration::from_millis(500));
    // P1 is replaced by a peer that answers setup correctly but then sends a short frame.
    let res = std::thread::scope(|s| {
        let h0 = s.spawn(|| -> mpc::Result<()> {
            let p = mpc::Party::setup(Box::new(a), cfg(TruncMethod::Fast))?;
            let x = mpc::AShare::zeros(0, &[4]);
            p.mul(&x, &x).map(|_| ())
        });
        let h2 = s.spawn(|| -> mpc::Result<()> {
            let p = mpc::Party::setup(Box::new(c), cfg(TruncMethod::Fast))?;
            let x = mpc::AShare::zeros(2, &[4]);
            p.mul(&x, &x).map(|_| ())
        });
        // Fake P1: setup messages of the right sizes, then a 3-byte product message.
        b.send(0, vec![0; 32]).unwrap();
        b.send(2, vec![0; 16]).unwrap();
        let _ = b.recv(2);
        let _ = b.recv(0);
        // Whichever honest party reads the short frame first fails and hangs up, so the
        // second send may find its link already closed: that is fine, not a test failure.
        let _ = b.send(2, vec![1, 2, 3]);
        let _ = b.send(0, vec![1, 2, 3]);
        (h0.join().unwrap(), h2.join().unwrap())
    });
    let msg = format!("{:?} / {:?}", res.0, res.1);
    assert!(res.0.is_err() || res.1.is_err(), "{msg}");
    let errs = [res.0.err(), res.1.err()];
    assert!(
        errs.iter().flatten().any(|e| e.to_string().contains("P1")),
        "an error must name P1: {msg}"
    );
}
