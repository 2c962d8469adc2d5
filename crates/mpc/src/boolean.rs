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
use crate::bshare::{words_for, BShare, PlaneCut};
use crate::error::{MpcError, Result};
use crate::fused;
use crate::party::{Ctx, Party};
use crate::wire::{check_words, decode_words, encode_words, word_at};

const P_RHO: u32 = 0;
const P_G0: u32 = 1;
const P_G1: u32 = 2;
/// Tree level l uses purpose P_LEVEL + l.
const P_LEVEL: u32 = 16;

/// Shared bit planes stored flat: plane j is words [j * w, (j + 1) * w) of each component.
#[derive(Clone, Debug)]
struct Flat {
    w: usize,
    mine: Vec<u64>,
    next: Vec<u64>,
}

/// One shared plane, borrowed.
#[derive(Clone, Copy)]
struct PlaneRef<'a> {
    mine: &'a [u64],
    next: &'a [u64],
}

impl Flat {
    fn planes(&self) -> usize {
        self.mine.len() / self.w.max(1)
    }
    fn plane(&self, j: usize) -> PlaneRef<'_> {
        let r = j * self.w..(j + 1) * self.w;
        PlaneRef {
            mine: &self.mine[r.clone()],
            next: &self.next[r],
        }
    }
    fn empty(w: usize, planes: usize) -> Flat {
        Flat {
            w,
            mine: Vec::with_capacity(w * planes),
            next: Vec::with_capacity(w * planes),
        }
    }
    /// Append plane a ^ b.
    fn push_xor(&mut self, a: PlaneRef<'_>, b: PlaneRef<'_>) {
        self.mine
            .extend(a.mine.iter().zip(b.mine).map(|(x, y)| x ^ y));
        self.next
            .extend(a.next.iter().zip(b.next).map(|(x, y)| x ^ y));
    }
    fn push(&mut self, a: PlaneRef<'_>) {
        self.mine.extend_from_slice(a.mine);
        self.next.extend_from_slice(a.next);
    }
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

/// How the adder of [`Party::msb_bits_of`] moves its input first: x + `add`, then each
/// component shifted right by `shift` bits (their sum is then floor((x + add) / 2^shift) minus a
/// carry of 0, 1 or 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignInput {
    pub add: u64,
    pub shift: u32,
}

impl SignInput {
    /// x itself.
    pub const AS_IS: SignInput = SignInput { add: 0, shift: 0 };
}

impl Party {
    /// ANDs of plane pairs, all in one message: z_i = x_i y_i ^ x_i y_{i+1} ^ x_{i+1} y_i ^ α_i,
    /// sent to P_{i-1}. Opened: z_{i+1} to P_i, masked by the XOR-zero-share component
    /// F(k_{i+2}) that P_i does not hold. Returns the products as flat planes, in pair order.
    fn and_batch(
        &self,
        cx: &Ctx<'_>,
        purpose: u32,
        w: usize,
        pairs: &[(PlaneRef<'_>, PlaneRef<'_>)],
    ) -> Result<Flat> {
        let total = pairs.len() * w;
        let mut z = Vec::with_capacity(total);
        for (x, y) in pairs {
            z.extend(
                (0..w).map(|i| (x.mine[i] & (y.mine[i] ^ y.next[i])) ^ (x.next[i] & y.mine[i])),
            );
        }
        cx.xor_zero_share(purpose, &mut z);
        let me = cx.id();
        let (prev, next) = ((me + 2) % 3, (me + 1) % 3);
        cx.send_abs(prev, encode_words(&z))?;
        let other = decode_words(cx.label, next, &cx.recv_abs(next)?, total)?;
        Ok(Flat {
            w,
            mine: z,
            next: other,
        })
    }

    /// Bitwise AND of two boolean shares of the same size. Cost: [`and_cost`].
    pub fn and(&self, x: &BShare, y: &BShare) -> Result<BShare> {
        let cx = self.begin("and");
        if (x.bits(), x.len()) != (y.bits(), y.len()) {
            return Err(MpcError::invalid("and", "operands differ in size"));
        }
        let px = PlaneRef {
            mine: x.mine(),
            next: x.next(),
        };
        let py = PlaneRef {
            mine: y.mine(),
            next: y.next(),
        };
        let r = self.and_batch(&cx, 0, x.mine().len(), &[(px, py)])?;
        Ok(BShare::new_unchecked(
            cx.id(),
            x.bits(),
            x.len(),
            r.mine,
            r.next,
        ))
    }

    /// The generate-propagate planes of v + w for the low `bits` bits (see the module docs),
    /// where x's components are first moved by `input` (each component's values bit-sliced in
    /// one pass on all cores, never stored whole). Returns (P for all `bits` planes, G for
    /// planes 0..bits-1).
    fn adder_inputs(
        &self,
        cx: &Ctx<'_>,
        x: &AShare,
        input: SignInput,
        bits: usize,
    ) -> Result<(Flat, Flat)> {
        let n = x.len();
        let w = words_for(n);
        let gl = (bits - 1) * w;
        let role = cx.role();
        let SignInput { add, shift } = input;
        // The constant goes to component 0 (as `AShare::add_scalar` puts it).
        let moved = |comp: usize| {
            let c = if comp == 0 { add } else { 0 };
            move |v: u64| v.wrapping_add(c) >> shift
        };
        let mut planes = vec![0u64; bits * w];
        if role == 0 {
            let (c0, c1) = (cx.abs(0), cx.abs(1));
            let (x0, x1, m0, m1) = (x.comp(c0).data(), x.comp(c1).data(), moved(c0), moved(c1));
            fused::run(n, PlaneCut::new(&mut planes, w), &|start, len, mut out| {
                fused::with_scratch(len, |v| {
                    let r = start..start + len;
                    for ((v, &a), &b) in v.iter_mut().zip(&x0[r.clone()]).zip(&x1[r]) {
                        *v = m0(a).wrapping_add(m1(b));
                    }
                    out.put(v);
                })
            });
            let rho = cx.draw_comp(1, P_RHO, bits * w);
            let mut b0 = planes;
            b0.iter_mut().zip(&rho).for_each(|(a, r)| *a ^= r);
            cx.send(2, encode_words(&b0))?;
            let p = Flat {
                w,
                mine: b0,
                next: rho,
            };
            let g = Flat {
                w,
                mine: cx.draw_comp(0, P_G0, gl),
                next: cx.draw_comp(1, P_G1, gl),
            };
            return Ok((p, g));
        }
        let (x2, m2) = (x.comp(cx.abs(2)).data(), moved(cx.abs(2)));
        fused::run(n, PlaneCut::new(&mut planes, w), &|start, len, mut out| {
            fused::with_scratch(len, |v| {
                for (v, &a) in v.iter_mut().zip(&x2[start..start + len]) {
                    *v = m2(a);
                }
                out.put(v);
            })
        });
        let wp = planes;
        let other = 3 - role;
        // My G term: R1 has ρ & w, R2 has b0 & w (b0 from R0), masked by the component I share
        // with R0.
        let v_comp = if role == 1 {
            cx.draw_comp(1, P_RHO, bits * w)
        } else {
            decode_words(cx.label, cx.abs(0), &cx.recv(0)?, bits * w)?
        };
        let mask = if role == 1 {
            cx.draw_comp(1, P_G1, gl)
        } else {
            cx.draw_comp(0, P_G0, gl)
        };
        let term: Vec<u64> = (0..gl).map(|i| (v_comp[i] & wp[i]) ^ mask[i]).collect();
        cx.send(other, encode_words(&term))?;
        let theirs = cx.recv(other)?;
        check_words(cx.label, cx.abs(other), &theirs, gl)?;
        let c2: Vec<u64> = term
            .iter()
            .enumerate()
            .map(|(i, a)| a ^ word_at(&theirs, i))
            .collect();
        if role == 1 {
            // R1 holds components (1, 2): v is (ρ, 0), w is (0, w).
            Ok((
                Flat {
                    w,
                    mine: v_comp,
                    next: wp,
                },
                Flat {
                    w,
                    mine: mask,
                    next: c2,
                },
            ))
        } else {
            // R2 holds components (2, 0): v is (0, b0), w is (w, 0).
            Ok((
                Flat {
                    w,
                    mine: wp,
                    next: v_comp,
                },
                Flat {
                    w,
                    mine: c2,
                    next: mask,
                },
            ))
        }
    }

    /// Combine leaf groups into the group generate of all of them (see the module docs). `g`
    /// holds one plane per leaf, `p` one per leaf but the first (leaf 0 has no P).
    fn carry_tree(
        &self,
        cx: &Ctx<'_>,
        mut g: Flat,
        mut p: Flat,
        mut p_base: usize,
    ) -> Result<Flat> {
        let w = g.w;
        let mut level = 0u32;
        while g.planes() > 1 {
            let m = g.planes();
            let pairs_n = m / 2;
            // Pair i combines lo = 2i and hi = 2i + 1; node j's P is plane j - 1 + p_base of `p`.
            let pp = |j: usize| p.plane(j - 1 + p_base);
            // The P pairs first: their results are the next level's P planes as they stand
            // (the batch's vectors, cut after them), not copied out plane by plane.
            let mut pairs = Vec::with_capacity(2 * pairs_n);
            for i in 1..pairs_n {
                pairs.push((pp(2 * i + 1), pp(2 * i)));
            }
            for i in 0..pairs_n {
                pairs.push((pp(2 * i + 1), g.plane(2 * i)));
            }
            let r = self.and_batch(cx, P_LEVEL + level, w, &pairs)?;
            let mut ng = Flat::empty(w, pairs_n + 1);
            for i in 0..pairs_n {
                ng.push_xor(g.plane(2 * i + 1), r.plane(pairs_n - 1 + i));
            }
            let mut np = r;
            np.mine.truncate((pairs_n - 1) * w);
            np.next.truncate((pairs_n - 1) * w);
            if m % 2 == 1 {
                ng.push(g.plane(m - 1));
                np.push(pp(m - 1));
            }
            g = ng;
            p = np;
            p_base = 0;
            level += 1;
        }
        Ok(g)
    }

    /// Boolean share of bit `bits - 1` of x mod 2^bits: the sign of x when |x| < 2^(bits-1).
    /// Cost: [`msb_cost`].
    pub fn msb_bits(&self, x: &AShare, bits: usize) -> Result<BShare> {
        self.msb_bits_of(x, SignInput::AS_IS, bits)
    }

    /// [`Party::msb_bits`] of x moved by `input` (x + c with every component then shifted
    /// right, as `AShare::add_scalar_shifted` does), without forming the moved share: the
    /// reduced-width comparisons of the nonlinear functions. Same cost.
    pub fn msb_bits_of(&self, x: &AShare, input: SignInput, bits: usize) -> Result<BShare> {
        let cx = self.begin("msb");
        check_width("msb", bits)?;
        let n = x.len();
        let w = words_for(n);
        let (p, g) = self.adder_inputs(&cx, x, input, bits)?;
        // Leaves 0..bits-1: G planes as they are; leaf j's P is plane j of `p` (p_base = 1).
        let mut top = Flat::empty(w, 1);
        let p_top = p.plane(bits - 1);
        let (pm, pn) = (p_top.mine.to_vec(), p_top.next.to_vec());
        let carry = self.carry_tree(&cx, g, p, 1)?;
        top.push_xor(
            PlaneRef {
                mine: &pm,
                next: &pn,
            },
            carry.plane(0),
        );
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
        if c == 0 {
            return self.msb(x);
        }
        self.msb(&x.add_scalar(c.wrapping_neg()))
    }

    /// Full A2B: a boolean share of all `bits` low bits of x (Kogge-Stone prefix over the planes,
    /// ceil(log2(bits - 1)) levels after the adder inputs).
    pub fn a2b(&self, x: &AShare, bits: usize) -> Result<BShare> {
        let cx = self.begin("a2b");
        check_width("a2b", bits)?;
        let n = x.len();
        let w = words_for(n);
        let (p, mut g) = self.adder_inputs(&cx, x, SignInput::AS_IS, bits)?;
        let leaves = bits - 1;
        // ps: current group propagate of planes 0..leaves (plane 0 unused).
        let mut ps = Flat {
            w,
            mine: p.mine[..leaves * w].to_vec(),
            next: p.next[..leaves * w].to_vec(),
        };
        let mut span = 1;
        let mut level = 0u32;
        while span < leaves {
            // G_i <- G_i ^ P_i & G_{i-span} for i >= span; P_i <- P_i & P_{i-span} for i >= 2 span.
            let mut pairs = Vec::new();
            for i in span..leaves {
                pairs.push((ps.plane(i), g.plane(i - span)));
            }
            for i in 2 * span..leaves {
                pairs.push((ps.plane(i), ps.plane(i - span)));
            }
            let r = self.and_batch(&cx, P_LEVEL + level, w, &pairs)?;
            let mut ng = Flat::empty(w, leaves);
            let mut np = Flat::empty(w, leaves);
            for i in 0..leaves {
                if i < span {
                    ng.push(g.plane(i));
                } else {
                    ng.push_xor(g.plane(i), r.plane(i - span));
                }
                if i < 2 * span {
                    np.push(ps.plane(i));
                } else {
                    np.push(r.plane(leaves - span + i - 2 * span));
                }
            }
            g = ng;
            ps = np;
            span *= 2;
            level += 1;
        }
        // sum_i = P0_i ^ carry_i, carry_i = G[i-1 : 0].
        let mut out = Flat::empty(w, bits);
        out.push(p.plane(0));
        for i in 1..bits {
            out.push_xor(p.plane(i), g.plane(i - 1));
        }
        Ok(BShare::new_unchecked(cx.id(), bits, n, out.mine, out.next))
    }
}

/// The combinations of a Brent-Kung prefix over `leaves` (G, P) nodes, level by level: each
/// `(hi, lo, with_p)` sets G_hi ^= P_hi & G_lo and, if `with_p`, P_hi &= P_lo. Up-sweep levels
/// (span 1, 2, 4, ...) then down-sweep levels; afterwards node i holds the group generate of
/// [i : 0]. About 2 leaves combinations in 2 log2(leaves) - 1 levels (Kogge-Stone: leaves log2
/// leaves in log2 leaves levels).
pub fn brent_kung_levels(leaves: usize) -> Vec<Vec<(usize, usize, bool)>> {
    let mut levels = Vec::new();
    let mut span = 1;
    while span < leaves {
        let level: Vec<_> = (2 * span - 1..leaves)
            .step_by(2 * span)
            .map(|i| (i, i - span, i != 2 * span - 1))
            .collect();
        if !level.is_empty() {
            levels.push(level);
        }
        span *= 2;
    }
    span /= 2;
    while span >= 1 {
        let level: Vec<_> = (3 * span - 1..leaves)
            .step_by(2 * span)
            .map(|i| (i, i - span, false))
            .collect();
        if !level.is_empty() {
            levels.push(level);
        }
        span /= 2;
    }
    levels
}

/// AND planes of each level of [`brent_kung_levels`].
pub fn brent_kung_ands(leaves: usize) -> Vec<usize> {
    brent_kung_levels(leaves)
        .iter()
        .map(|l| l.iter().map(|&(_, _, p)| 1 + p as usize).sum())
        .collect()
}

impl Party {
    /// A2B with a Brent-Kung prefix: the same result as [`Party::a2b`] with less than half of
    /// its AND traffic for wide inputs (38 bits: 94 AND planes instead of 282) in about twice
    /// its rounds (11 levels instead of 6). For callers that are bandwidth-bound (the MSB
    /// normalisation of reciprocal and rsqrt). Cost: the adder inputs (as [`Party::a2b`]) plus
    /// 24 bytes per 64 values per AND plane of [`brent_kung_ands`].
    pub fn a2b_brent_kung(&self, x: &AShare, bits: usize) -> Result<BShare> {
        let cx = self.begin("a2b_bk");
        check_width("a2b", bits)?;
        let n = x.len();
        let w = words_for(n);
        let (p, g) = self.adder_inputs(&cx, x, SignInput::AS_IS, bits)?;
        let leaves = bits - 1;
        let plane = |f: &Flat, j: usize| (f.plane(j).mine.to_vec(), f.plane(j).next.to_vec());
        let mut gs: Vec<(Vec<u64>, Vec<u64>)> = (0..leaves).map(|j| plane(&g, j)).collect();
        let mut ps: Vec<(Vec<u64>, Vec<u64>)> = (0..leaves).map(|j| plane(&p, j)).collect();
        for (level, combos) in brent_kung_levels(leaves).iter().enumerate() {
            let r = {
                fn as_ref(v: &(Vec<u64>, Vec<u64>)) -> PlaneRef<'_> {
                    PlaneRef {
                        mine: &v.0,
                        next: &v.1,
                    }
                }
                let mut pairs = Vec::new();
                for &(hi, lo, _) in combos {
                    pairs.push((as_ref(&ps[hi]), as_ref(&gs[lo])));
                }
                for &(hi, lo, with_p) in combos {
                    if with_p {
                        pairs.push((as_ref(&ps[hi]), as_ref(&ps[lo])));
                    }
                }
                self.and_batch(&cx, P_LEVEL + level as u32, w, &pairs)?
            };
            let mut k = combos.len();
            for (c, &(hi, _, with_p)) in combos.iter().enumerate() {
                let pr = r.plane(c);
                let gh = &mut gs[hi];
                gh.0.iter_mut().zip(pr.mine).for_each(|(a, b)| *a ^= b);
                gh.1.iter_mut().zip(pr.next).for_each(|(a, b)| *a ^= b);
                if with_p {
                    let pp = r.plane(k);
                    ps[hi] = (pp.mine.to_vec(), pp.next.to_vec());
                    k += 1;
                }
            }
        }
        // sum_i = P0_i ^ carry_i, carry_i = G[i-1 : 0].
        let mut out = Flat::empty(w, bits);
        out.push(p.plane(0));
        for i in 1..bits {
            out.push_xor(
                p.plane(i),
                PlaneRef {
                    mine: &gs[i - 1].0,
                    next: &gs[i - 1].1,
                },
            );
        }
        Ok(BShare::new_unchecked(cx.id(), bits, n, out.mine, out.next))
    }
}

/// The widths the adder-based conversions take: at least a sign and one value bit, at most a word.
fn check_width(op: &'static str, bits: usize) -> Result<()> {
    if (2..=64).contains(&bits) {
        Ok(())
    } else {
        Err(MpcError::invalid(op, format!("width {bits} not in 2..=64")))
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

    #[test]
    fn brent_kung_prefix_covers_every_position() {
        // Simulate the group ranges: after all levels node i must cover [0, i].
        for leaves in 1..70 {
            let mut lo: Vec<usize> = (0..leaves).collect();
            for level in brent_kung_levels(leaves) {
                for (hi, l, with_p) in level {
                    assert_eq!(lo[hi], l + 1, "leaves {leaves}: adjacent groups");
                    assert_eq!(with_p, lo[l] != 0, "leaves {leaves}: P needed iff not at 0");
                    lo[hi] = lo[l];
                }
            }
            assert!(lo.iter().all(|&v| v == 0), "leaves {leaves}");
        }
        assert_eq!(brent_kung_ands(37).iter().sum::<usize>(), 94);
    }
}
