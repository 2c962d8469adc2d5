//! From bits back to arithmetic: bit injection (B2A), the multiplexer b * x, select, ReLU and
//! max along an axis.
//!
//! A shared bit b = b_0 ^ b_1 ^ b_2 is split as b = u XOR w with u = b_0 ^ b_1 known to R0 and
//! w = b_2 known to R1 and R2. Then b = w + (1 - 2w) u: once u is arithmetically shared, the
//! factor (1 - 2w) is public to the two parties that will finish the computation.
//!
//! # B2A (bit injection), 2 rounds of latency, 8n bytes per party
//! R0 sends u - ρ to R2 (ρ from the key of R0 and R1): [u] = (u - ρ, ρ, 0). R1 computes
//! t1 = (1 - 2w) ρ + w, R2 computes t2 = (1 - 2w)(u - ρ); t1 + t2 = b. They swap t1 - c_1 and
//! t2 - c_0 where c_0, c_1 are drawn from R0's keys with R2 and R1, and both set
//! c_2 = (t1 - c_1) + (t2 - c_0). Opened: u - ρ to R2 (masked by ρ), t1 - c_1 to R2 (masked by
//! c_1), t2 - c_0 to R1 (masked by c_0).
//!
//! # Multiplexer b * x, 2 rounds of latency, 16n bytes from R0, 8n from R1 and R2
//! With [u] = (u - ρ, ρ, 0) as above, the product u x has the 3-out-of-3 terms
//! z_0 = u0 x_0 + u0 x_1 + ρ x_0 (R0, from the start), z_1 = ρ (x_1 + x_2) (R1, from the start),
//! z_2 = u0 x_2 (R2, once u0 = u - ρ arrives). R0 also sends z_0 + μ to R1 (μ from the key of R0
//! and R2). Then b x = w x + (1 - 2w) u x splits as
//!   T1 = (1 - 2w)(z_0 + μ + z_1) + w (x_1 + x_2)   at R1,
//!   T2 = (1 - 2w)(z_2 - μ) + w x_0                  at R2,
//! which are re-shared as in B2A. Opened: u - ρ to R2 (masked by ρ), z_0 + μ to R1 (masked by μ),
//! T1 - c_1 to R2 and T2 - c_0 to R1 (masked by c_1, c_0). This is cheaper than B2A followed by a
//! multiplication (3 rounds, 8n + 8n per party).

use ring::RingTensor;

use crate::arith::Cost;
use crate::ashare::AShare;
use crate::bshare::{from_planes, BShare};
use crate::error::{MpcError, Result};
use crate::fused::{self, Cut, Frame, Fresh, Lag};
use crate::party::Party;
use crate::wire::{check_words, decode_words, encode_words};

const P_RHO: u32 = 0;
const P_MU: u32 = 1;
const P_C0: u32 = 2;
const P_C1: u32 = 3;

/// Stated cost of [`Party::b2a`]: 8n bytes per party, 1 round each as metered, latency 2.
pub fn b2a_cost(n: usize) -> Cost {
    let b = 8 * n as u64;
    Cost {
        bytes: [b; 3],
        rounds: [1; 3],
        latency: 2,
    }
}

/// Stated cost of [`Party::mux`]: R0 16n bytes, R1 and R2 8n; 1 round each as metered, latency 2.
pub fn mux_cost(n: usize) -> Cost {
    let b = 8 * n as u64;
    Cost {
        bytes: [2 * b, b, b],
        rounds: [1; 3],
        latency: 2,
    }
}

/// 0/1 words of the bits of one plane.
fn bits_of(plane: &[u64], n: usize) -> Vec<u64> {
    from_planes(plane, 1, n)
}

fn check_bit(label: &'static str, b: &BShare, n: usize) -> Result<()> {
    if b.bits() != 1 || b.len() != n {
        return Err(MpcError::invalid(
            label,
            format!(
                "need one bit per element ({n}), got {} planes of {}",
                b.bits(),
                b.len()
            ),
        ));
    }
    Ok(())
}

impl Party {
    /// Arithmetic share (0 or 1 in the ring) of a shared bit, shaped `shape`. Cost: [`b2a_cost`].
    pub fn b2a(&self, b: &BShare, shape: &[usize]) -> Result<AShare> {
        let cx = self.begin("b2a");
        let n: usize = shape.iter().product();
        check_bit("b2a", b, n)?;
        let me = cx.id();
        let t = |d: Vec<u64>| RingTensor::new(shape, d);
        match cx.role() {
            0 => {
                let u = bits_of(
                    &b.comp(cx.abs(0))
                        .iter()
                        .zip(b.comp(cx.abs(1)))
                        .map(|(x, y)| x ^ y)
                        .collect::<Vec<_>>(),
                    n,
                );
                let rho = cx.draw_comp(1, P_RHO, n);
                let u0: Vec<u64> = u
                    .iter()
                    .zip(&rho)
                    .map(|(a, r)| a.wrapping_sub(*r))
                    .collect();
                cx.send(2, encode_words(&u0))?;
                Ok(AShare::new_unchecked(
                    me,
                    t(cx.draw_comp(0, P_C0, n))?,
                    t(cx.draw_comp(1, P_C1, n))?,
                ))
            }
            role => {
                let w = bits_of(b.comp(cx.abs(2)), n);
                let other = 3 - role;
                let (mask_comp, purpose) = if role == 1 { (1, P_C1) } else { (0, P_C0) };
                let term: Vec<u64> = if role == 1 {
                    let rho = cx.draw_comp(1, P_RHO, n);
                    (0..n)
                        .map(|i| {
                            let s = 1u64.wrapping_sub(w[i] << 1);
                            s.wrapping_mul(rho[i]).wrapping_add(w[i])
                        })
                        .collect()
                } else {
                    let u0 = decode_words("b2a", cx.abs(0), &cx.recv(0)?, n)?;
                    (0..n)
                        .map(|i| 1u64.wrapping_sub(w[i] << 1).wrapping_mul(u0[i]))
                        .collect()
                };
                let mask = cx.draw_comp(mask_comp, purpose, n);
                let mine: Vec<u64> = term
                    .iter()
                    .zip(&mask)
                    .map(|(a, m)| a.wrapping_sub(*m))
                    .collect();
                cx.send(other, encode_words(&mine))?;
                let theirs = decode_words("b2a", cx.abs(other), &cx.recv(other)?, n)?;
                let c2: Vec<u64> = mine
                    .iter()
                    .zip(&theirs)
                    .map(|(a, b)| a.wrapping_add(*b))
                    .collect();
                if role == 1 {
                    Ok(AShare::new_unchecked(me, t(mask)?, t(c2)?))
                } else {
                    Ok(AShare::new_unchecked(me, t(c2)?, t(mask)?))
                }
            }
        }
    }

    /// b * x for a shared bit per element of x (no truncation: the result has x's scale).
    /// Cost: [`mux_cost`]. Pipelined like a truncation (`crate::arith`): every message goes
    /// out in pieces ([`fused::pieces`]) as its pass makes them, so R1 and R2 start on R0's
    /// first piece while R0 computes the next, and each swaps its piece j and finishes piece
    /// j - 1 while the piece is still in cache. Same bytes and rounds as whole messages (later
    /// pieces are continuations).
    pub fn mux(&self, b: &BShare, x: &AShare) -> Result<AShare> {
        let cx = self.begin("mux");
        let n = x.len();
        check_bit("mux", b, n)?;
        let me = cx.id();
        let nonce = cx.nonce;
        let shape = x.shape().to_vec();
        let t = |d: Vec<u64>| RingTensor::new(&shape, d);
        if cx.role() == 0 {
            let (b0, b1) = (b.comp(cx.abs(0)), b.comp(cx.abs(1)));
            let (x0, x1) = (x.comp(cx.abs(0)).data(), x.comp(cx.abs(1)).data());
            let (key_rho, key_mu) = (cx.prf_rel(1), cx.prf_rel(0));
            for (j, (first, m)) in fused::pieces(n).enumerate() {
                let (mut to_r2, mut to_r1) = (Frame::new(8 * m), Frame::new(8 * m));
                let frames = (to_r2.cut().words(), to_r1.cut().words());
                fused::run(m, frames, &|at, len, (u0_out, z_out)| {
                    let start = first + at;
                    fused::with_scratch(2 * len, |buf| {
                        let (rho, mu) = buf.split_at_mut(len);
                        key_rho.fill_at(nonce, P_RHO, start, rho);
                        key_mu.fill_at(nonce, P_MU, start, mu);
                        // 64 elements per word of the bit planes (`start` is a multiple of 64).
                        let r = start..start + len;
                        let planes = b0[start / 64..].iter().zip(&b1[start / 64..]);
                        let groups = rho.chunks_mut(64).zip(mu.chunks_mut(64));
                        let groups = groups.zip(x0[r.clone()].chunks(64)).zip(x1[r].chunks(64));
                        for ((((rho, mu), x0), x1), (w0, w1)) in groups.zip(planes) {
                            let bits = w0 ^ w1;
                            let elems = rho.iter_mut().zip(mu.iter_mut()).zip(x0).zip(x1);
                            for (j, (((r, m), &a), &b)) in elems.enumerate() {
                                let u0 = ((bits >> j) & 1).wrapping_sub(*r);
                                let z0 = u0
                                    .wrapping_mul(a.wrapping_add(b))
                                    .wrapping_add(r.wrapping_mul(a));
                                *m = z0.wrapping_add(*m);
                                *r = u0;
                            }
                        }
                        u0_out.put_words(rho);
                        z_out.put_words(mu);
                    });
                });
                cx.send_piece(2, j, to_r2.into_vec())?;
                cx.send_piece(1, j, to_r1.into_vec())?;
            }
            return Ok(AShare::new_unchecked(
                me,
                t(cx.draw_comp(0, P_C0, n))?,
                t(cx.draw_comp(1, P_C1, n))?,
            ));
        }
        let role = cx.role();
        let other = 3 - role;
        let w = b.comp(cx.abs(2));
        // R1 holds x_1, x_2 and ρ, gets z_0 + μ; R2 holds x_2, x_0 and μ, gets u0.
        let (xa, xb) = (
            x.comp(cx.abs(role)).data(),
            x.comp(cx.abs((role + 1) % 3)).data(),
        );
        let (key_pad, pad_purpose) = if role == 1 {
            (cx.prf_rel(1), P_RHO)
        } else {
            (cx.prf_rel(0), P_MU)
        };
        let (key_mask, mask_purpose) = if role == 1 {
            (cx.prf_rel(1), P_C1)
        } else {
            (cx.prf_rel(0), P_C0)
        };
        let (mut mask, mut mine) = (Fresh::new(n), Fresh::new(n));
        {
            let lens = fused::piece_lens(n);
            let todo = fused::pieces(n)
                .zip(mask.pieces(lens.iter().copied()))
                .zip(mine.pieces(lens.iter().copied()))
                .enumerate();
            // Piece j finishes with the other's term after piece j + 1 went out.
            let finish = |(m, c2): (usize, &mut [u64])| {
                let theirs = cx.recv(other)?;
                check_words("mux", cx.abs(other), &theirs, m)?;
                fused::run(m, Cut::words(c2), &|at, len, c| {
                    let theirs = theirs[8 * at..8 * (at + len)].chunks_exact(8);
                    for (v, t) in c.data.iter_mut().zip(theirs) {
                        *v = v.wrapping_add(u64::from_le_bytes(t.try_into().expect("8 bytes")));
                    }
                });
                Ok::<(), MpcError>(())
            };
            let mut swapped = Lag::new();
            for (j, (((first, m), mut mask_piece), mut mine_piece)) in todo {
                let from_r0 = cx.recv(0)?;
                check_words("mux", cx.abs(0), &from_r0, m)?;
                let mut to_other = Frame::new(8 * m);
                let parts = (mask_piece.cut(), mine_piece.cut(), to_other.cut().words());
                fused::run(m, parts, &|at, len, (mask, mine, out)| {
                    let start = first + at;
                    fused::with_scratch(2 * len, |buf| {
                        let (big_t, m) = buf.split_at_mut(len);
                        key_pad.fill_at(nonce, pad_purpose, start, big_t);
                        // 64 elements per word of the bit plane (`start` is a multiple of 64).
                        let r = start..start + len;
                        let got = from_r0[8 * at..8 * (at + len)].chunks(8 * 64);
                        let groups = big_t.chunks_mut(64).zip(got);
                        let groups = groups.zip(xa[r.clone()].chunks(64)).zip(xb[r].chunks(64));
                        for ((((big_t, got), xa), xb), &w) in groups.zip(&w[start / 64..]) {
                            let elems = big_t.iter_mut().zip(got.chunks_exact(8)).zip(xa).zip(xb);
                            for (j, (((v, got), &a), &b)) in elems.enumerate() {
                                let got = u64::from_le_bytes(got.try_into().expect("8 bytes"));
                                let (z, wx) = if role == 1 {
                                    let s = a.wrapping_add(b);
                                    (got.wrapping_add(v.wrapping_mul(s)), s)
                                } else {
                                    (got.wrapping_mul(a).wrapping_sub(*v), b)
                                };
                                let we = (w >> j) & 1;
                                *v = 1u64
                                    .wrapping_sub(we << 1)
                                    .wrapping_mul(z)
                                    .wrapping_add(we.wrapping_mul(wx));
                            }
                        }
                        // The mask is formed in scratch memory and streamed out (a fresh vector).
                        key_mask.fill_at(nonce, mask_purpose, start, m);
                        let v =
                            mine.init(big_t.iter().zip(m.iter()).map(|(a, m)| a.wrapping_sub(*m)));
                        out.put_words(v);
                        mask.init_streamed(m);
                    });
                });
                cx.send_piece(other, j, to_other.into_vec())?;
                mask_piece.into_written();
                swapped.push((m, mine_piece.into_written()), finish)?;
            }
            swapped.finish(finish)?;
        }
        let (mask, c2) = (mask.into_vec(), mine.into_vec());
        if role == 1 {
            Ok(AShare::new_unchecked(me, t(mask)?, t(c2)?))
        } else {
            Ok(AShare::new_unchecked(me, t(c2)?, t(mask)?))
        }
    }

    /// b ? x : y elementwise (one mux).
    pub fn select(&self, b: &BShare, x: &AShare, y: &AShare) -> Result<AShare> {
        let d = self.mux(b, &x.sub(y)?)?;
        d.add(y)
    }

    /// max(x, 0): (1 - msb(x)) * x. Latency 8 + 2 rounds.
    pub fn relu(&self, x: &AShare) -> Result<AShare> {
        let s = self.msb(x)?;
        self.mux(&s.not(), x)
    }

    /// ReLU for |x| < 2^k (reduced-width sign).
    pub fn relu_bounded(&self, x: &AShare, k: u32) -> Result<AShare> {
        let s = self.msb_bounded(x, k)?;
        self.mux(&s.not(), x)
    }

    /// Maximum along `axis` by a tree of comparisons: ceil(log2(len)) levels, each one sign
    /// extraction and one mux over half the remaining entries.
    pub fn max_axis(&self, x: &AShare, axis: usize, keepdim: bool) -> Result<AShare> {
        self.max_axis_inner(x, axis, keepdim, None)
    }

    /// [`Party::max_axis`] when every difference of two entries satisfies |a - b| < 2^k.
    pub fn max_axis_bounded(
        &self,
        x: &AShare,
        axis: usize,
        keepdim: bool,
        k: u32,
    ) -> Result<AShare> {
        self.max_axis_inner(x, axis, keepdim, Some(k))
    }

    fn max_axis_inner(
        &self,
        x: &AShare,
        axis: usize,
        keepdim: bool,
        k: Option<u32>,
    ) -> Result<AShare> {
        let nd = x.shape().len();
        if axis >= nd || x.shape()[axis] == 0 {
            return Err(MpcError::invalid(
                "max_axis",
                format!("axis {axis} of shape {:?} is missing or empty", x.shape()),
            ));
        }
        // Move `axis` last.
        let mut perm: Vec<usize> = (0..nd).filter(|&a| a != axis).collect();
        perm.push(axis);
        let mut cur = x.permute(&perm)?;
        let last = nd - 1;
        while cur.shape()[last] > 1 {
            let l = cur.shape()[last];
            let half = l / 2;
            let a = cur.narrow(last, 0, half)?;
            let b = cur.narrow(last, half, half)?;
            let diff = a.sub(&b)?;
            // [b < a] = msb(b - a).
            let neg = diff.neg();
            let lt = match k {
                Some(k) => self.msb_bounded(&neg, k)?,
                None => self.msb(&neg)?,
            };
            let m = self.mux(&lt, &diff)?.add(&b)?;
            cur = if l % 2 == 1 {
                AShare::concat(&[&m, &cur.narrow(last, 2 * half, 1)?], last)?
            } else {
                m
            };
        }
        // cur has the reduced axis (size 1) last: put it back.
        let mut inv = vec![0; nd];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        let out = cur.permute(&inv)?;
        if keepdim {
            Ok(out)
        } else {
            let mut s = out.shape().to_vec();
            s.remove(axis);
            out.reshape(&s)
        }
    }
}
