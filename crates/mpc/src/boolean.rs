//! Boolean protocols on bit-sliced shares: AND, arithmetic-to-boolean conversion with a
//! parallel-prefix adder, MSB extraction (the sign, i.e. comparison with zero) and comparisons.
//!
//! # A2B and MSB
//! x = v + w with v = x_0 + x_1 known to R0 and w = x_2 known to R1 and R2. Only v needs to be
//! shared in boolean form: R0 sends v XOR ρ to R2 (ρ from the key of R0 and R1), giving the sharing
//! (v ^ ρ, ρ, 0); w is the sharing (0, 0, w) for free. The adder's propagate bits P = v ^ w are
//! then local, and its generate bits G = v & w need only two of the three AND messages, because
//! the AND's R0 term is identically zero: R1 knows ρ & w, R2 knows (v ^ ρ) & w, and they swap
//! them masked by PRF components that R0 shares with each, which become the two other components.
//!
//! The carry into bit `bits - 1` is then the group generate G[bits-2 : 0], computed by a binary
//! tree over the planes: (G, P)_hi o (G, P)_lo = (G_hi ^ P_hi & G_lo, P_hi & P_lo), with no P for
//! the group that contains bit 0. All combinations of one tree level are one batch of ANDs and
//! one message. msb = P[bits-1] ^ carry. For the full ring (bits = 64) the tree has 63 leaves and
//! 6 levels with 118 ANDs.
//!
//! What is opened: v ^ ρ (to R2; ρ is unknown to R2), R1's and R2's G terms (each masked by a
//! component the receiver does not hold), and in each AND the receiver's missing component of a
//! fresh XOR-zero-shared value. Nothing is ever unmasked.

use ring::RingTensor;

use crate::arith::Cost;
use crate::ashare::AShare;
use crate::bshare::{to_planes, words_for, BShare};
use crate::error::{MpcError, Result};
use crate::party::{Ctx, Party};
use crate::wire::{decode_words, push_words};

const P_RHO: u32 = 0;
const P_G0: u32 = 1;
const P_G1: u32 = 2;
/// Tree level l uses purpose P_LEVEL + l.
const P_LEVEL: u32 = 16;

/// A shared bit-plane vector: (component `id`, component `id + 1`).
#[derive(Clone, Debug)]
struct Planes {
    mine: Vec<u64>,
    next: Vec<u64>,
}

impl Planes {
    fn xor(&self, o: &Planes) -> Planes {
        Planes {
            mine: self.mine.iter().zip(&o.mine).map(|(a, b)| a ^ b).collect(),
            next: self.next.iter().zip(&o.next).map(|(a, b)| a ^ b).collect(),
        }
    }
    fn slice(&self, start: usize, len: usize) -> Planes {
        Planes {
            mine: self.mine[start..start + len].to_vec(),
            next: self.next[start..start + len].to_vec(),
        }
    }
}

/// A node of the carry tree: group generate and (except for the group of bit 0) propagate.
struct Node {
    g: Planes,
    p: Option<Planes>,
}

/// Number of AND planes in each level of the carry tree over `leaves` groups.
pub fn carry_tree_ands(leaves: usize) -> Vec<usize> {
    let mut has_p: Vec<bool> = (0..leaves).map(|i| i > 0).collect();
    let mut out = Vec::new();
    while has_p.len() > 1 {
        let mut ands = 0;
        let mut next = Vec::new();
        for pair in has_p.chunks(2) {
            match pair {
                [lo, _hi] => {
                    ands += 1 + *lo as usize;
                    next.push(*lo);
                }
                [single] => next.push(*single),
                _ => unreachable!(),
            }
        }
        out.push(ands);
        has_p = next;
    }
    out
}

/// Stated cost of [`Party::msb_bits`] on n values of `bits` bits (w = ceil(n / 64) words):
/// R0 sends 8w (bits + T), R1 and R2 8w (bits - 1 + T), T = ANDs of the carry tree over bits - 1
/// leaves (118 for 64 bits); L = its levels (6 for 64 bits). Rounds R0: L, R1 and R2: L + 1;
/// latency L + 2 (8 for 64 bits, the same as SPU). For n = 1M, 64 bits: 68 MB in total.
pub fn msb_cost(n: usize, bits: usize) -> Cost {
    let w = 8 * words_for(n) as u64;
    let tree = carry_tree_ands(bits - 1);
    let t: u64 = tree.iter().sum::<usize>() as u64;
    let l = tree.len() as u64;
    Cost {
        bytes: [
            w * (bits as u64 + t),
            w * (bits as u64 - 1 + t),
            w * (bits as u64 - 1 + t),
        ],
        rounds: [l.max(1), l + 1, l + 1],
        latency: l + 2,
    }
}

/// Stated cost of [`Party::and`]: 1 round, 8 * bits * ceil(n / 64) bytes per party.
pub fn and_cost(n: usize, bits: usize) -> Cost {
    let b = 8 * (bits * words_for(n)) as u64;
    Cost {
        bytes: [b; 3],
        rounds: [1; 3],
        latency: 1,
    }
}

impl Party {
    /// ANDs of plane pairs, all in one message: z_i = x_i y_i ^ x_i y_{i+1} ^ x_{i+1} y_i ^ α_i,
    /// sent to P_{i-1}. Opened: z_{i+1} to P_i, masked by the XOR-zero-share component
    /// F(k_{i+2}) that P_i does not hold.
    fn and_batch(
        &self,
        cx: &Ctx<'_>,
        purpose: u32,
        pairs: &[(&Planes, &Planes)],
    ) -> Result<Vec<Planes>> {
        let total: usize = pairs.iter().map(|(x, _)| x.mine.len()).sum();
        let alpha = cx.zero_share_xor(purpose, total);
        let mut z = Vec::with_capacity(total);
        for (x, y) in pairs {
            for i in 0..x.mine.len() {
                z.push((x.mine[i] & y.mine[i]) ^ (x.mine[i] & y.next[i]) ^ (x.next[i] & y.mine[i]));
            }
        }
        for (a, b) in z.iter_mut().zip(&alpha) {
            *a ^= b;
        }
        let me = cx.id();
        let (prev, next) = ((me + 2) % 3, (me + 1) % 3);
        let mut msg = Vec::with_capacity(8 * total);
        push_words(&mut msg, &z);
        cx.send_abs(prev, msg)?;
        let other = decode_words(cx.label, next, &cx.recv_abs(next)?, total)?;
        let mut out = Vec::with_capacity(pairs.len());
        let mut off = 0;
        for (x, _) in pairs {
            let l = x.mine.len();
            out.push(Planes {
                mine: z[off..off + l].to_vec(),
                next: other[off..off + l].to_vec(),
            });
            off += l;
        }
        Ok(out)
    }

    /// Bitwise AND of two boolean shares of the same size. Cost: [`and_cost`].
    pub fn and(&self, x: &BShare, y: &BShare) -> Result<BShare> {
        let cx = self.begin("and");
        if (x.bits(), x.len()) != (y.bits(), y.len()) {
            return Err(MpcError::invalid("and", "operands differ in size"));
        }
        let px = Planes {
            mine: x.mine().to_vec(),
            next: x.next().to_vec(),
        };
        let py = Planes {
            mine: y.mine().to_vec(),
            next: y.next().to_vec(),
        };
        let mut out = self.and_batch(&cx, 0, &[(&px, &py)])?;
        let r = out.pop().expect("one result");
        Ok(BShare::new_unchecked(
            cx.id(),
            x.bits(),
            x.len(),
            r.mine,
            r.next,
        ))
    }

    /// The generate-propagate planes of v + w for the low `bits` bits (see the module docs).
    /// Returns (P for all `bits` planes, G for planes 0..bits-1).
    fn adder_inputs(&self, cx: &Ctx<'_>, x: &AShare, bits: usize) -> Result<(Planes, Planes)> {
        let n = x.len();
        let words = words_for(n);
        let gl = (bits - 1) * words;
        let role = cx.role();
        match role {
            0 => {
                let v: Vec<u64> = x
                    .comp(cx.abs(0))
                    .data()
                    .iter()
                    .zip(x.comp(cx.abs(1)).data())
                    .map(|(a, b)| a.wrapping_add(*b))
                    .collect();
                let rho = cx.draw_comp(1, P_RHO, bits * words);
                let b0: Vec<u64> = to_planes(&v, bits)
                    .iter()
                    .zip(&rho)
                    .map(|(a, b)| a ^ b)
                    .collect();
                let mut msg = Vec::with_capacity(8 * b0.len());
                push_words(&mut msg, &b0);
                cx.send(2, msg)?;
                let p = Planes {
                    mine: b0,
                    next: rho,
                };
                let g = Planes {
                    mine: cx.draw_comp(0, P_G0, gl),
                    next: cx.draw_comp(1, P_G1, gl),
                };
                Ok((p, g))
            }
            _ => {
                let wp = to_planes(x.comp(cx.abs(2)).data(), bits);
                let other = 3 - role;
                // My G term: R1 has ρ & w, R2 has b0 & w (b0 from R0).
                let (v_comp, my_mask_comp) = if role == 1 {
                    (cx.draw_comp(1, P_RHO, bits * words), 1)
                } else {
                    (
                        decode_words(cx.label, cx.abs(0), &cx.recv(0)?, bits * words)?,
                        0,
                    )
                };
                let mask = cx.draw_comp(my_mask_comp, if role == 1 { P_G1 } else { P_G0 }, gl);
                let term: Vec<u64> = (0..gl).map(|i| (v_comp[i] & wp[i]) ^ mask[i]).collect();
                let mut msg = Vec::with_capacity(8 * gl);
                push_words(&mut msg, &term);
                cx.send(other, msg)?;
                let theirs = decode_words(cx.label, cx.abs(other), &cx.recv(other)?, gl)?;
                let c2: Vec<u64> = term.iter().zip(&theirs).map(|(a, b)| a ^ b).collect();
                if role == 1 {
                    // R1 holds components (1, 2): v is (ρ, 0), w is (0, w).
                    Ok((
                        Planes {
                            mine: v_comp,
                            next: wp,
                        },
                        Planes {
                            mine: mask,
                            next: c2,
                        },
                    ))
                } else {
                    // R2 holds components (2, 0): v is (0, b0), w is (w, 0).
                    Ok((
                        Planes {
                            mine: wp,
                            next: v_comp,
                        },
                        Planes {
                            mine: c2,
                            next: mask,
                        },
                    ))
                }
            }
        }
    }

    /// Combine leaves into the group generate of all of them (see the module docs).
    fn carry_tree(&self, cx: &Ctx<'_>, mut nodes: Vec<Node>) -> Result<Planes> {
        let mut level = 0u32;
        while nodes.len() > 1 {
            let mut pairs: Vec<(&Planes, &Planes)> = Vec::new();
            for ch in nodes.chunks(2) {
                if let [lo, hi] = ch {
                    let php = hi.p.as_ref().expect("only node 0 lacks P");
                    pairs.push((php, &lo.g));
                    if let Some(plo) = &lo.p {
                        pairs.push((php, plo));
                    }
                }
            }
            let mut res = self.and_batch(cx, P_LEVEL + level, &pairs)?.into_iter();
            let mut next_nodes = Vec::with_capacity(nodes.len().div_ceil(2));
            let mut it = nodes.into_iter();
            while let Some(lo) = it.next() {
                match it.next() {
                    Some(hi) => {
                        let pg = res.next().expect("one AND per pair");
                        let g = hi.g.xor(&pg);
                        let p = if lo.p.is_some() { res.next() } else { None };
                        next_nodes.push(Node { g, p });
                    }
                    None => next_nodes.push(lo),
                }
            }
            nodes = next_nodes;
            level += 1;
        }
        Ok(nodes.pop().expect("at least one leaf").g)
    }

    /// Boolean share of bit `bits - 1` of x mod 2^bits: the sign of x when |x| < 2^(bits-1).
    /// Cost: [`msb_cost`].
    pub fn msb_bits(&self, x: &AShare, bits: usize) -> Result<BShare> {
        let cx = self.begin("msb");
        if !(2..=64).contains(&bits) {
            return Err(MpcError::invalid(
                "msb",
                format!("width {bits} not in 2..=64"),
            ));
        }
        let n = x.len();
        let words = words_for(n);
        let (p, g) = self.adder_inputs(&cx, x, bits)?;
        let leaves: Vec<Node> = (0..bits - 1)
            .map(|j| Node {
                g: g.slice(j * words, words),
                p: (j > 0).then(|| p.slice(j * words, words)),
            })
            .collect();
        let carry = self.carry_tree(&cx, leaves)?;
        let top = p.slice((bits - 1) * words, words).xor(&carry);
        Ok(BShare::new_unchecked(cx.id(), 1, n, top.mine, top.next))
    }

    /// Sign bit of x (1 iff x < 0 as a signed 64-bit value). 8 rounds of latency.
    pub fn msb(&self, x: &AShare) -> Result<BShare> {
        self.msb_bits(x, 64)
    }

    /// Sign bit of x known to satisfy |x| < 2^k: works on the low k + 1 bits only (fewer adder
    /// levels and bytes). Wrong (not insecure) if the bound does not hold.
    pub fn msb_bounded(&self, x: &AShare, k: u32) -> Result<BShare> {
        self.msb_bits(x, (k as usize + 1).min(64))
    }

    /// [x < y] for shares (|x - y| < 2^63).
    pub fn less_than(&self, x: &AShare, y: &AShare) -> Result<BShare> {
        self.msb(&x.sub(y)?)
    }

    /// [x < y] when |x - y| < 2^k.
    pub fn less_than_bounded(&self, x: &AShare, y: &AShare, k: u32) -> Result<BShare> {
        self.msb_bounded(&x.sub(y)?, k)
    }

    /// [x < c] for a public ring tensor c (broadcasting).
    pub fn less_than_public(&self, x: &AShare, c: &RingTensor) -> Result<BShare> {
        self.msb(&x.add_public(&c.neg())?)
    }

    /// [x < c] for a public ring scalar c.
    pub fn less_than_scalar(&self, x: &AShare, c: u64) -> Result<BShare> {
        self.msb(&x.add_scalar(c.wrapping_neg()))
    }

    /// Full A2B: a boolean share of all `bits` low bits of x (Kogge-Stone prefix over the planes,
    /// ceil(log2(bits - 1)) levels after the adder inputs).
    pub fn a2b(&self, x: &AShare, bits: usize) -> Result<BShare> {
        let cx = self.begin("a2b");
        if !(2..=64).contains(&bits) {
            return Err(MpcError::invalid(
                "a2b",
                format!("width {bits} not in 2..=64"),
            ));
        }
        let n = x.len();
        let words = words_for(n);
        let (p, g) = self.adder_inputs(&cx, x, bits)?;
        let mut gs: Vec<Planes> = (0..bits - 1).map(|j| g.slice(j * words, words)).collect();
        let mut ps: Vec<Planes> = (0..bits - 1).map(|j| p.slice(j * words, words)).collect();
        let mut span = 1;
        let mut level = 0u32;
        while span < bits - 1 {
            // G_i <- G_i ^ P_i & G_{i-span} for i >= span; P_i <- P_i & P_{i-span} for i >= 2 span.
            let mut pairs: Vec<(&Planes, &Planes)> = Vec::new();
            for i in span..bits - 1 {
                pairs.push((&ps[i], &gs[i - span]));
            }
            for i in 2 * span..bits - 1 {
                pairs.push((&ps[i], &ps[i - span]));
            }
            let res = self.and_batch(&cx, P_LEVEL + level, &pairs)?;
            let (gr, pr) = res.split_at(bits - 1 - span);
            let new_g: Vec<Planes> = (span..bits - 1).map(|i| gs[i].xor(&gr[i - span])).collect();
            for (i, ng) in (span..bits - 1).zip(new_g) {
                gs[i] = ng;
            }
            for (i, np) in (2 * span..bits - 1).zip(pr.iter()) {
                ps[i] = np.clone();
            }
            span *= 2;
            level += 1;
        }
        // sum_i = P0_i ^ carry_i, carry_i = G[i-1 : 0].
        let mut mine = Vec::with_capacity(bits * words);
        let mut next = Vec::with_capacity(bits * words);
        for i in 0..bits {
            let p0 = p.slice(i * words, words);
            let s = if i == 0 { p0 } else { p0.xor(&gs[i - 1]) };
            mine.extend(s.mine);
            next.extend(s.next);
        }
        Ok(BShare::new_unchecked(cx.id(), bits, n, mine, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carry_tree_of_the_full_ring() {
        let t = carry_tree_ands(63);
        assert_eq!(t, vec![61, 31, 15, 7, 3, 1]);
        assert_eq!(t.iter().sum::<usize>(), 118);
        assert_eq!(carry_tree_ands(1), Vec::<usize>::new());
        assert_eq!(carry_tree_ands(2), vec![1]);
    }
}
