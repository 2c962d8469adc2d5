//! Arithmetic protocols: multiplication (elementwise, matmul, conv2d, conv_transpose2d) with
//! secret or public weights, each followed by fixed-point truncation, and truncation on its own.
//!
//! Notation: n = elements of the result, d = bits truncated (the session's f for fixed-point
//! products), R0, R1, R2 = the parties in the rotated roles of `Party::begin`. Costs are bytes
//! *sent* per party and rounds as the `net::Meter` counts them (a party's round = a batch of sends
//! after it received); "latency" is the longest chain of dependent messages.
//!
//! # The product
//! With x and y shared as (x_i, x_{i+1}), P_i computes z_i = x_i y_i + x_i y_{i+1} + x_{i+1} y_i
//! (for matrices: x_i (y_i + y_{i+1}) + x_{i+1} y_i, one GEMM over a doubled inner dimension).
//! The z_i are a 3-out-of-3 sharing of xy. Adding a zero-share α_i (from the PRF keys) makes each
//! z_i + α_i uniformly random to anyone but P_i, so it can be sent (the raw product re-shares
//! that way; the truncating ones use the masks below).
//!
//! # Truncation: the split
//! Both methods split the product as z = B + A with B = z_0 + t - s known to R0 only and
//! A = (z_1 + s) + (z_2 - t) known to R1 and R2 (they swap their terms), where s is drawn from
//! the key of R0 and R1 and t from the key of R0 and R2 (masks that sum to zero, one draw less
//! at R1 and R2 than a generic zero-share). B is uniform to R1 (t unknown) and to R2 (s
//! unknown), so A reveals nothing to them. R0 shifts B down, R1 and R2 shift A down, and R0
//! re-splits its part as (t0 - δ, δ) with δ drawn from the key R0 shares with R1; the result is a
//! replicated sharing (c_0, c_1, c_2) = (t0 - δ, δ, ceil(A / 2^d)), reached in a *single* round
//! in which every party sends one ring element. This is the cheapest sound fused
//! multiply-truncate we know of: the same cost as the multiplication alone.
//!
//! ## Fast (`TruncMethod::Fast`)
//! floor(B / 2^d) + ceil(A / 2^d) (signed) is floor(z / 2^d) or that + 1 unless B + A overflows
//! as signed 64-bit integers, which happens with probability exactly (|z| + 1) / 2^64 over the
//! uniform B (z is the un-truncated value, so |z| = |v| 2^(2f) for a real product v: about
//! |v| 2^-28 at f = 18). Then the result is off by 2^(64-d) (2^28 in real units at f = 18).
//! `tests/trunc_failures.rs` measures this rate on products of magnitude 2^56.
//!
//! ## Robust (`TruncMethod::Robust`)
//! Add 2^62 to B so that z' = z + 2^62 lies in [0, 2^63) whenever |z| < 2^62. Read B and A as
//! unsigned: B + A = z' + 2^64 w and, because z' < 2^63, the wrap bit is w = B63 OR A63 (if both
//! top bits are 0 there is no wrap; if exactly one is set the sum is >= 2^63 and must wrap for z'
//! to be < 2^63). With arithmetic shifts this gives exactly
//!   floor(z'/2^d) = (B >>a d) + (A >>a d) + 2^(64-d) (B63 AND A63) + e,  e in {0, 1},
//! so the local fast truncation is corrected by one bit product. B63 is R0's, A63 is known to
//! both R1 and R2: R0 sends each of them a 1-out-of-2 oblivious transfer of the d-bit messages
//! m_a = a B63 - ζ0 - ζ1 (mod 2^d), a in {0, 1}, padded with pads that the *other* of R1/R2
//! shares with R0 and reveals for the index a = A63 that it knows too. R1 and R2 both learn
//! m = A63 B63 - ζ0 - ζ1, ζ0 (shared by R0, R2) and ζ1 (shared by R0, R1) are the other two
//! components: a replicated sharing of the product bit times 2^(64-d), with no extra round
//! beyond the one in which A63 becomes known. Error: at most 1 ulp (the result is floor(z / 2^d)
//! or that + 1), never a large error while |z| < 2^62.
//!
//! What is opened and why it is safe, per party (all masks are fresh PRF outputs of a key the
//! receiver does not hold):
//! - R1 receives z_2 - t (masked by t), R0's OT pair (masked by pads of the key of R0 and R2),
//!   and the pad of its own index, which unmasks m = A63 B63 - ζ0 - ζ1, masked by ζ0. The other
//!   OT message stays padded.
//! - R2 receives z_1 + s (masked by s), t0 - δ (masked by δ), the OT pair (pads of the key of R0
//!   and R1), and the pad of its index, which unmasks m, masked by ζ1.
//! - R0 receives nothing.

use rayon::prelude::*;
use ring::conv::{col2out, im2col, kernel_matrix, ConvGeometry, ConvPadding};
use ring::{gemm, matmul_dims, RingTensor};

use crate::ashare::AShare;
use crate::config::TruncMethod;
use crate::error::{MpcError, Result};
use crate::party::{Ctx, Party};
use crate::wire::{
    check_words, decode_words, encode_words, pack_iter, packed_len, split_frame, word_at, BitReader,
};

// PRF purposes inside one arithmetic protocol invocation.
const P_ZERO: u32 = 0;
const P_DELTA: u32 = 1;
/// The d-bit values of the robust correction: two OT pads and ζ (three purposes if 3d > 64).
const P_NARROW: u32 = 2;
const P_MASK: u32 = 6;

/// Elements above which local elementwise work is split across the cores.
const PAR_MIN: usize = 1 << 15;

/// Bytes sent and rounds per relative role R0, R1, R2, and the latency in rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    pub bytes: [u64; 3],
    pub rounds: [u64; 3],
    pub latency: u64,
}

impl Cost {
    pub const ZERO: Cost = Cost {
        bytes: [0; 3],
        rounds: [0; 3],
        latency: 0,
    };
    pub fn total_bytes(&self) -> u64 {
        self.bytes.iter().sum()
    }
    /// The cost seen by absolute party `p` when the helper rotation is `h`.
    pub fn for_party(&self, p: usize, h: usize) -> (u64, u64) {
        let r = (p + 3 - h) % 3;
        (self.bytes[r], self.rounds[r])
    }
}

/// Stated cost of a product of n elements followed by `trunc` (None: raw ring product).
///
/// - raw: 1 round, 8n bytes per party.
/// - fast: 1 round, 8n bytes per party (24n in total).
/// - robust: R0 8n + 2 ceil(2nd / 8), R1 and R2 8n + ceil(nd / 8); R0 1 round, R1 and R2 2;
///   latency 2. At d = 18: 37.5 bytes per element in total.
pub fn product_cost(n: usize, trunc: Option<(TruncMethod, u32)>) -> Cost {
    let n8 = 8 * n as u64;
    match trunc {
        None | Some((TruncMethod::Fast, _)) => Cost {
            bytes: [n8; 3],
            rounds: [1; 3],
            latency: 1,
        },
        Some((TruncMethod::Robust, d)) => {
            let pair = packed_len(2 * n, d) as u64;
            let one = packed_len(n, d) as u64;
            Cost {
                bytes: [n8 + 2 * pair, n8 + one, n8 + one],
                rounds: [1, 2, 2],
                latency: 2,
            }
        }
    }
}

/// Stated cost of truncating a replicated sharing of n elements by d bits.
///
/// - fast: R0 sends 8n bytes in 1 round, R1 and R2 nothing (the rotation moves R0 around).
/// - robust: R0 8n + 2 ceil(2nd / 8), R1 and R2 ceil(nd / 8); 1 round each.
pub fn trunc_cost(n: usize, method: TruncMethod, d: u32) -> Cost {
    let n8 = 8 * n as u64;
    match method {
        TruncMethod::Fast => Cost {
            bytes: [n8, 0, 0],
            rounds: [1, 0, 0],
            latency: 1,
        },
        TruncMethod::Robust => {
            let pair = packed_len(2 * n, d) as u64;
            let one = packed_len(n, d) as u64;
            Cost {
                bytes: [n8 + 2 * pair, one, one],
                rounds: [1; 3],
                latency: 1,
            }
        }
    }
}

#[inline]
fn floor_shift(v: u64, d: u32) -> u64 {
    ((v as i64) >> d) as u64
}

#[inline]
fn ceil_shift(v: u64, d: u32) -> u64 {
    floor_shift(v, d).wrapping_add(((v & ((1u64 << d) - 1)) != 0) as u64)
}

fn zip_map(a: &[u64], b: &[u64], f: impl Fn(u64, u64) -> u64 + Sync) -> Vec<u64> {
    if a.len() >= PAR_MIN {
        a.par_iter()
            .zip(b.par_iter())
            .map(|(&x, &y)| f(x, y))
            .collect()
    } else {
        a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
    }
}

fn tensor(shape: &[usize], data: Vec<u64>) -> Result<RingTensor> {
    Ok(RingTensor::new(shape, data)?)
}

fn check_trunc_bits(label: &'static str, d: u32) -> Result<()> {
    if d == 0 || d >= 62 {
        return Err(MpcError::invalid(
            label,
            format!("cannot truncate by {d} bits (need 1..=61)"),
        ));
    }
    Ok(())
}

/// The d-bit values of the robust correction that the holders of one relative component share:
/// two OT pads and ζ. One PRF word gives all three when 3d <= 64.
struct Narrow {
    words: Vec<Vec<u64>>,
    d: u32,
    mask: u64,
}

impl Narrow {
    fn draw(cx: &Ctx<'_>, comp: usize, n: usize, d: u32) -> Narrow {
        let words = if 3 * d <= 64 {
            vec![cx.draw_comp(comp, P_NARROW, n)]
        } else {
            (0..3)
                .map(|k| cx.draw_comp(comp, P_NARROW + k, n))
                .collect()
        };
        Narrow {
            words,
            d,
            mask: (1u64 << d) - 1,
        }
    }
    /// Field k of element i: pad 0, pad 1, ζ for k = 0, 1, 2.
    #[inline]
    fn get(&self, i: usize, k: usize) -> u64 {
        if self.words.len() == 1 {
            (self.words[0][i] >> (k as u32 * self.d)) & self.mask
        } else {
            self.words[k][i] & self.mask
        }
    }
}

/// Append R0's OT pair for one receiver: the n messages m_0 + pad_0 then the n messages
/// m_1 + pad_1, where m_a = a B63 - ζ0 - ζ1 (mod 2^d) and the pads come from `pads`.
fn push_ot_pair(buf: &mut Vec<u8>, bits: &[u8], z0: &Narrow, z1: &Narrow, pads: &Narrow, d: u32) {
    let n = bits.len();
    let msg = |j: usize| {
        let (i, a) = (j % n, j / n);
        let m = (z0.get(i, 2).wrapping_add(z1.get(i, 2))).wrapping_neg();
        m.wrapping_add(a as u64 * bits[i] as u64)
            .wrapping_add(pads.get(i, a))
    };
    pack_iter(buf, (0..2 * n).map(msg), 2 * n, d);
}

/// `v[i] = f(v[i], i)` over a slice, on all cores for long slices.
fn update(v: &mut [u64], f: impl Fn(u64, usize) -> u64 + Sync) {
    if v.len() >= PAR_MIN {
        v.par_iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = f(*x, i));
    } else {
        v.iter_mut().enumerate().for_each(|(i, x)| *x = f(*x, i));
    }
}

impl Party {
    /// The common end of every product: P_i holds `z`, its 3-out-of-3 share of the product, of
    /// shape `shape`; returns the replicated sharing of z (raw) or of z truncated by `d` bits.
    /// Cost: [`product_cost`].
    pub(crate) fn finish_product(
        &self,
        cx: &Ctx<'_>,
        mut z: Vec<u64>,
        shape: &[usize],
        trunc: Option<(TruncMethod, u32)>,
    ) -> Result<AShare> {
        let n = z.len();
        let me = cx.id();
        let Some((method, d)) = trunc else {
            cx.add_zero_share(P_ZERO, &mut z);
            // Plain reshare: send z_i + α_i to P_{i-1}, receive z_{i+1} + α_{i+1} from P_{i+1}.
            let (prev, next) = ((me + 2) % 3, (me + 1) % 3);
            cx.send_abs(prev, encode_words(&z))?;
            let other = decode_words(cx.label, next, &cx.recv_abs(next)?, n)?;
            return Ok(AShare::new_unchecked(
                me,
                tensor(shape, z)?,
                tensor(shape, other)?,
            ));
        };
        check_trunc_bits(cx.label, d)?;
        // Masks that sum to zero: B = z_0 + t - s at R0, z_1 + s at R1, z_2 - t at R2, with s
        // shared by R0 and R1 and t by R0 and R2 (see the module docs).
        let (s_key, t_key) = (cx.abs(1), cx.abs(0));
        let prf = |comp| cx.party.comp_prf(comp);
        match cx.role() {
            0 => {
                prf(t_key).add_into(cx.nonce, P_MASK, &mut z, false);
                prf(s_key).add_into(cx.nonce, P_MASK, &mut z, true);
            }
            1 => prf(s_key).add_into(cx.nonce, P_MASK, &mut z, false),
            _ => prf(t_key).add_into(cx.nonce, P_MASK, &mut z, true),
        }
        if cx.role() != 0 {
            // R1 and R2 swap their terms of A = (z_1 + s) + (z_2 - t).
            let other = 3 - cx.role();
            cx.send(other, encode_words(&z))?;
            let theirs = cx.recv(other)?;
            check_words(cx.label, cx.abs(other), &theirs, n)?;
            update(&mut z, |a, i| a.wrapping_add(word_at(&theirs, i)));
        }
        self.trunc_split(cx, z, shape, method, d)
    }

    /// Truncate z = B + A where R0 holds `v` = B and R1, R2 hold `v` = A (see the module docs).
    fn trunc_split(
        &self,
        cx: &Ctx<'_>,
        mut v: Vec<u64>,
        shape: &[usize],
        method: TruncMethod,
        d: u32,
    ) -> Result<AShare> {
        let n = v.len();
        let me = cx.id();
        let mask = (1u64 << d) - 1;
        let k_shift = 64 - d;
        let robust = method == TruncMethod::Robust;
        let role = cx.role();
        if role == 0 {
            let off = if robust { 1u64 << 62 } else { 0 };
            let mut delta = cx.draw_comp(1, P_DELTA, n);
            let bits: Vec<u8> = if robust {
                v.iter()
                    .map(|b| (b.wrapping_add(off) >> 63) as u8)
                    .collect()
            } else {
                Vec::new()
            };
            // e0 = floor((B + off) / 2^d) - δ, in place.
            update(&mut v, |b, i| {
                floor_shift(b.wrapping_add(off), d).wrapping_sub(delta[i])
            });
            let mut to_r2 = encode_words(&v);
            if !robust {
                cx.send(2, to_r2)?;
                return Ok(AShare::new_unchecked(
                    me,
                    tensor(shape, v)?,
                    tensor(shape, delta)?,
                ));
            }
            // Pads of R1's OT and ζ0 from the key shared with R2; pads of R2's OT and ζ1 from
            // the key shared with R1.
            let w0 = Narrow::draw(cx, 0, n, d);
            let w1 = Narrow::draw(cx, 1, n, d);
            let mut m1 = Vec::with_capacity(packed_len(2 * n, d));
            push_ot_pair(&mut m1, &bits, &w0, &w1, &w0, d);
            cx.send(1, m1)?;
            push_ot_pair(&mut to_r2, &bits, &w0, &w1, &w1, d);
            cx.send(2, to_r2)?;
            update(&mut v, |e, i| e.wrapping_add(w0.get(i, 2) << k_shift));
            update(&mut delta, |e, i| e.wrapping_add(w1.get(i, 2) << k_shift));
            return Ok(AShare::new_unchecked(
                me,
                tensor(shape, v)?,
                tensor(shape, delta)?,
            ));
        }
        // R1 and R2: v = A; the component they share is ceil(A / 2^d) (+ the correction).
        let other = 3 - role;
        let (r0_comp, r0_extra) = if role == 1 { (1, 0) } else { (0, 8 * n) };
        let choice: Vec<u8> = if robust {
            v.iter().map(|a| (a >> 63) as u8).collect()
        } else {
            Vec::new()
        };
        update(&mut v, |a, _| ceil_shift(a, d));
        if !robust {
            let c_r0 = if role == 1 {
                cx.draw_comp(1, P_DELTA, n)
            } else {
                decode_words(cx.label, cx.abs(0), &cx.recv(0)?, n)?
            };
            return self.assemble(me, role, shape, c_r0, v);
        }
        // Robust: reveal to the other the pad of my index a = A63 (pads of the key I share with
        // R0), take R0's OT pair and the other's pad for me.
        let narrow = Narrow::draw(cx, r0_comp, n, d);
        let mut pm = Vec::with_capacity(packed_len(n, d));
        pack_iter(
            &mut pm,
            (0..n).map(|i| narrow.get(i, choice[i] as usize)),
            n,
            d,
        );
        cx.send(other, pm)?;
        let frame = cx.recv(0)?;
        let parts = split_frame(
            cx.label,
            cx.abs(0),
            &frame,
            &[r0_extra, packed_len(2 * n, d)],
        )?;
        let their = cx.recv(other)?;
        if their.len() != packed_len(n, d) {
            return Err(MpcError::BadMessage {
                protocol: cx.label,
                from: cx.abs(other),
                expected: packed_len(n, d),
                got: their.len(),
            });
        }
        let (mut msg0, mut msg1) = (
            BitReader::new(parts[1], d, 0),
            BitReader::new(parts[1], d, n * d as usize),
        );
        let mut pad = BitReader::new(&their, d, 0);
        let offset = 1u64 << (62 - d);
        for (i, c) in v.iter_mut().enumerate() {
            let (m0, m1) = (msg0.read(), msg1.read());
            let msg = if choice[i] == 1 { m1 } else { m0 };
            let m = msg.wrapping_sub(pad.read()) & mask;
            *c = c.wrapping_add(m << k_shift).wrapping_sub(offset);
        }
        let mut c_r0 = if role == 1 {
            cx.draw_comp(1, P_DELTA, n)
        } else {
            decode_words(cx.label, cx.abs(0), parts[0], n)?
        };
        update(&mut c_r0, |e, i| {
            e.wrapping_add(narrow.get(i, 2) << k_shift)
        });
        self.assemble(me, role, shape, c_r0, v)
    }

    /// R1 holds (c_1, c_2), R2 holds (c_2, c_0): `c_r0` is the component shared with R0.
    fn assemble(
        &self,
        me: usize,
        role: usize,
        shape: &[usize],
        c_r0: Vec<u64>,
        c2: Vec<u64>,
    ) -> Result<AShare> {
        if role == 1 {
            Ok(AShare::new_unchecked(
                me,
                tensor(shape, c_r0)?,
                tensor(shape, c2)?,
            ))
        } else {
            Ok(AShare::new_unchecked(
                me,
                tensor(shape, c2)?,
                tensor(shape, c_r0)?,
            ))
        }
    }

    /// Truncate a replicated sharing by `d` bits (for products with public values, which are
    /// local). The split is B = x_0 + x_1 (R0) and A = x_2 (R1 and R2 already both hold it), so
    /// A63 is known at once and even the robust method needs only one round.
    /// Cost: [`trunc_cost`]. Opened: as for the fused product (R1/R2 see only masked OT messages,
    /// masked pads and t0 - δ).
    pub fn trunc(&self, x: &AShare, d: u32, method: TruncMethod) -> Result<AShare> {
        let cx = self.begin("trunc");
        check_trunc_bits(cx.label, d)?;
        let v = if cx.role() == 0 {
            zip_map(
                x.comp(cx.abs(0)).data(),
                x.comp(cx.abs(1)).data(),
                u64::wrapping_add,
            )
        } else {
            x.comp(cx.abs(2)).data().to_vec()
        };
        self.trunc_split(&cx, v, x.shape(), method, d)
    }

    fn method(&self, m: Option<TruncMethod>) -> TruncMethod {
        m.unwrap_or(self.config().trunc)
    }

    // ---- elementwise ------------------------------------------------------------------------

    /// Local 3-out-of-3 share of the elementwise product (after broadcasting both operands).
    fn local_product(x: &AShare, y: &AShare) -> Result<(Vec<u64>, Vec<usize>)> {
        let (x, y) = if x.shape() == y.shape() {
            (std::borrow::Cow::Borrowed(x), std::borrow::Cow::Borrowed(y))
        } else {
            let s = ring::broadcast_shape("mul", x.shape(), y.shape())?;
            (
                std::borrow::Cow::Owned(x.broadcast_to(&s)?),
                std::borrow::Cow::Owned(y.broadcast_to(&s)?),
            )
        };
        let (a0, a1, b0, b1) = (
            x.mine().data(),
            x.next().data(),
            y.mine().data(),
            y.next().data(),
        );
        let f = |i: usize| {
            a0[i]
                .wrapping_mul(b0[i].wrapping_add(b1[i]))
                .wrapping_add(a1[i].wrapping_mul(b0[i]))
        };
        let z: Vec<u64> = if a0.len() >= PAR_MIN {
            (0..a0.len()).into_par_iter().map(f).collect()
        } else {
            (0..a0.len()).map(f).collect()
        };
        Ok((z, x.shape().to_vec()))
    }

    /// Ring product without rescaling (integers, bits): 1 round, 8n bytes per party.
    pub fn mul_raw(&self, x: &AShare, y: &AShare) -> Result<AShare> {
        let cx = self.begin("mul_raw");
        let (z, shape) = Self::local_product(x, y)?;
        self.finish_product(&cx, z, &shape, None)
    }

    /// Fixed-point elementwise product (numpy broadcasting) with the session's truncation.
    /// Cost: [`product_cost`] with d = f.
    pub fn mul(&self, x: &AShare, y: &AShare) -> Result<AShare> {
        self.mul_with(x, y, None)
    }

    /// [`Party::mul`] with the truncation method overridden.
    pub fn mul_with(&self, x: &AShare, y: &AShare, method: Option<TruncMethod>) -> Result<AShare> {
        let cx = self.begin("mul");
        let (z, shape) = Self::local_product(x, y)?;
        self.finish_product(
            &cx,
            z,
            &shape,
            Some((self.method(method), self.frac_bits())),
        )
    }

    /// Fixed-point square; same cost as [`Party::mul`], one multiplication less locally.
    pub fn square(&self, x: &AShare) -> Result<AShare> {
        let cx = self.begin("square");
        let (a0, a1) = (x.mine().data(), x.next().data());
        let z = zip_map(a0, a1, |p, q| {
            p.wrapping_mul(p.wrapping_add(q.wrapping_mul(2)))
        });
        self.finish_product(
            &cx,
            z,
            x.shape(),
            Some((self.method(None), self.frac_bits())),
        )
    }

    /// Elementwise product with a public fixed-point tensor (broadcasting), then truncation.
    /// Cost: [`trunc_cost`].
    pub fn mul_public(&self, x: &AShare, c: &RingTensor) -> Result<AShare> {
        let raw = x.mul_public_raw(c)?;
        self.trunc(&raw, self.frac_bits(), self.method(None))
    }

    /// Product with a public real constant: encoded with f fractional bits, then truncated.
    pub fn scale(&self, x: &AShare, c: f64) -> Result<AShare> {
        let e = self.config().fixed_point().encode(c)?;
        self.trunc(&x.scale_raw(e), self.frac_bits(), self.method(None))
    }

    // ---- matrices ---------------------------------------------------------------------------

    /// Batched fixed-point matrix product of shares: (..., m, k) x (..., k, n), or x (k, n).
    /// Local: one GEMM [x_i | x_{i+1}] [y_i + y_{i+1} ; y_i] per batch entry.
    /// Cost: [`product_cost`] over the m n (times batch) outputs.
    pub fn matmul(&self, x: &AShare, y: &AShare) -> Result<AShare> {
        self.matmul_with(x, y, None)
    }

    pub fn matmul_with(
        &self,
        x: &AShare,
        y: &AShare,
        method: Option<TruncMethod>,
    ) -> Result<AShare> {
        let cx = self.begin("matmul");
        let (batch, m, k, n, y_batched) = matmul_dims(x.shape(), y.shape())?;
        let mut z = Vec::with_capacity(batch * m * n);
        let ysum = y.mine().add(y.next())?;
        let mut a = vec![0u64; m * 2 * k];
        let mut b = vec![0u64; 2 * k * n];
        for bi in 0..batch {
            let r = bi * m * k..(bi + 1) * m * k;
            let (x0, x1) = (&x.mine().data()[r.clone()], &x.next().data()[r]);
            for r in 0..m {
                a[r * 2 * k..r * 2 * k + k].copy_from_slice(&x0[r * k..(r + 1) * k]);
                a[r * 2 * k + k..(r + 1) * 2 * k].copy_from_slice(&x1[r * k..(r + 1) * k]);
            }
            if bi == 0 || y_batched {
                let yb = if y_batched { bi } else { 0 };
                b[..k * n].copy_from_slice(&ysum.data()[yb * k * n..(yb + 1) * k * n]);
                b[k * n..].copy_from_slice(&y.mine().data()[yb * k * n..(yb + 1) * k * n]);
            }
            z.extend(gemm::gemm(&a, &b, m, 2 * k, n));
        }
        let mut shape = x.shape()[..x.shape().len() - 1].to_vec();
        shape.push(n);
        self.finish_product(
            &cx,
            z,
            &shape,
            Some((self.method(method), self.frac_bits())),
        )
    }

    /// x @ W for a public fixed-point W (k, n): one GEMM of both components stacked, then
    /// truncation. Cost: [`trunc_cost`].
    pub fn matmul_public(&self, x: &AShare, w: &RingTensor) -> Result<AShare> {
        let (batch, m, k, n, w_batched) = matmul_dims(x.shape(), w.shape())?;
        let raw = if w_batched {
            x.matmul_public_raw(w)?
        } else {
            let rows = batch * m;
            let mut stacked = Vec::with_capacity(2 * rows * k);
            stacked.extend_from_slice(x.mine().data());
            stacked.extend_from_slice(x.next().data());
            let out = gemm::gemm(&stacked, w.data(), 2 * rows, k, n);
            let mut shape = x.shape()[..x.shape().len() - 1].to_vec();
            shape.push(n);
            AShare::new_unchecked(
                x.id(),
                tensor(&shape, out[..rows * n].to_vec())?,
                tensor(&shape, out[rows * n..].to_vec())?,
            )
        };
        self.trunc(&raw, self.frac_bits(), self.method(None))
    }

    // ---- convolutions -----------------------------------------------------------------------

    fn conv_secret(
        &self,
        label: &'static str,
        x: &AShare,
        w: &AShare,
        geo: &ConvGeometry,
    ) -> Result<AShare> {
        let cx = self.begin(label);
        let (p, cols) = (geo.patch_len(), geo.columns());
        let o = geo.out_channels;
        let c0 = im2col(x.mine(), geo);
        let c1 = im2col(x.next(), geo);
        let w0 = kernel_matrix(w.mine(), geo)?;
        let w1 = kernel_matrix(w.next(), geo)?;
        let wsum = w0.add(&w1)?;
        // [w_i + w_{i+1} | w_i] (o x 2p) times [cols(x_i) ; cols(x_{i+1})] (2p x cols).
        let mut a = vec![0u64; o * 2 * p];
        for r in 0..o {
            a[r * 2 * p..r * 2 * p + p].copy_from_slice(&wsum.data()[r * p..(r + 1) * p]);
            a[r * 2 * p + p..(r + 1) * 2 * p].copy_from_slice(&w0.data()[r * p..(r + 1) * p]);
        }
        let mut b = c0.into_data();
        b.extend_from_slice(c1.data());
        let z = gemm::gemm(&a, &b, o, 2 * p, cols);
        let z = col2out(&z, geo).into_data();
        self.finish_product(
            &cx,
            z,
            &geo.output_shape(),
            Some((self.method(None), self.frac_bits())),
        )
    }

    fn conv_public(&self, x: &AShare, w: &RingTensor, geo: &ConvGeometry) -> Result<AShare> {
        let (p, cols) = (geo.patch_len(), geo.columns());
        let c0 = im2col(x.mine(), geo);
        let c1 = im2col(x.next(), geo);
        // One GEMM: w (o x p) times [cols(x_i) | cols(x_{i+1})] (p x 2 cols).
        let mut b = vec![0u64; p * 2 * cols];
        for r in 0..p {
            b[r * 2 * cols..r * 2 * cols + cols]
                .copy_from_slice(&c0.data()[r * cols..(r + 1) * cols]);
            b[r * 2 * cols + cols..(r + 1) * 2 * cols]
                .copy_from_slice(&c1.data()[r * cols..(r + 1) * cols]);
        }
        let wm = kernel_matrix(w, geo)?;
        let y = gemm::gemm(wm.data(), &b, geo.out_channels, p, 2 * cols);
        let o = geo.out_channels;
        let (mut y0, mut y1) = (Vec::with_capacity(o * cols), Vec::with_capacity(o * cols));
        for r in 0..o {
            y0.extend_from_slice(&y[r * 2 * cols..r * 2 * cols + cols]);
            y1.extend_from_slice(&y[r * 2 * cols + cols..(r + 1) * 2 * cols]);
        }
        let raw = AShare::new_unchecked(x.id(), col2out(&y0, geo), col2out(&y1, geo));
        self.trunc(&raw, self.frac_bits(), self.method(None))
    }

    /// Fixed-point conv2d of NCHW shares by secret OIHW weights (no bias).
    /// Cost: [`product_cost`] over the output elements.
    pub fn conv2d(
        &self,
        x: &AShare,
        w: &AShare,
        stride: usize,
        padding: ConvPadding,
    ) -> Result<AShare> {
        let geo = ConvGeometry::conv2d(x.shape(), w.shape(), stride, padding)?;
        self.conv_secret("conv2d", x, w, &geo)
    }

    /// Fixed-point conv2d by public weights. Cost: [`trunc_cost`] over the output elements.
    pub fn conv2d_public(
        &self,
        x: &AShare,
        w: &RingTensor,
        stride: usize,
        padding: ConvPadding,
    ) -> Result<AShare> {
        let geo = ConvGeometry::conv2d(x.shape(), w.shape(), stride, padding)?;
        self.conv_public(x, w, &geo)
    }

    /// Fixed-point flax transposed convolution by secret weights. Cost: [`product_cost`].
    pub fn conv_transpose2d(
        &self,
        x: &AShare,
        w: &AShare,
        stride: usize,
        padding: ConvPadding,
    ) -> Result<AShare> {
        let geo = ConvGeometry::conv_transpose2d(x.shape(), w.shape(), stride, padding)?;
        self.conv_secret("conv_transpose2d", x, w, &geo)
    }

    /// Fixed-point flax transposed convolution by public weights. Cost: [`trunc_cost`].
    pub fn conv_transpose2d_public(
        &self,
        x: &AShare,
        w: &RingTensor,
        stride: usize,
        padding: ConvPadding,
    ) -> Result<AShare> {
        let geo = ConvGeometry::conv_transpose2d(x.shape(), w.shape(), stride, padding)?;
        self.conv_public(x, w, &geo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_bracket_the_quotient() {
        for v in [
            0i64,
            1,
            -1,
            5,
            -5,
            1 << 20,
            -(1 << 20) - 3,
            i64::MAX,
            i64::MIN,
        ] {
            let f = floor_shift(v as u64, 4) as i64;
            let c = ceil_shift(v as u64, 4) as i64;
            assert_eq!(f, v.div_euclid(16));
            assert_eq!(c, f + (v.rem_euclid(16) != 0) as i64);
        }
    }
}
