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
//! replicated sharing (c_0, c_1, c_2) = (t0 - δ, δ, A / 2^d), reached in a *single* round.
//!
//! Only the high bits of A travel: the low d bits of A only move the result by a carry, so R1
//! and R2 swap the high 64 - d bits of their terms a_1 = z_1 + s and a_2 = z_2 - t (each
//! uniform to the receiver) and both use Ã = ((a_1 >> d) + (a_2 >> d)) 2^d = A - L, with
//! L = (a_1 mod 2^d) + (a_2 mod 2^d) in [0, 2^(d+1)). R0 adds K = 1.5 2^d to B, which centres
//! the dropped carry: B + Ã = z + K - L, and since Ã's low bits are zero,
//! floor(B / 2^d) + Ã / 2^d = floor((z + K - L) / 2^d) exactly (as long as B + Ã does not
//! overflow, below). That is within 1.5 ulp of z / 2^d and unbiased (L / 2^d averages 1, the
//! floor takes 0.5). R0 sends 8 bytes per element, R1 and R2 (64 - d) / 8 each: 19.5 bytes per
//! element in all at d = 18, less than the multiplication alone (24). This is the cheapest sound
//! fused multiply-truncate we know of.
//!
//! ## Fast (`TruncMethod::Fast`)
//! The local shifts are right unless B + Ã overflows as signed 64-bit integers, which happens
//! with probability about (|z| + 1) / 2^64 over the uniform B (z is the un-truncated value, so
//! |z| = |v| 2^(2f) for a real product v: about |v| 2^-28 at f = 18). Then the result is off by
//! 2^(64-d) (2^28 in real units at f = 18). `tests/trunc_failures.rs` measures this rate on
//! products of magnitude 2^56.
//!
//! ## Robust (`TruncMethod::Robust`)
//! R0 also adds 2^62 to B so that z' = z + 2^62 (+ K - L in a fused product) lies in
//! [0, 2^63) whenever |z| < 2^62 - 2^(d+1). Read B and A (Ã) as unsigned: B + A = z' + 2^64 w
//! and, because z' < 2^63, the wrap bit is w = B63 OR A63 (if both top bits are 0 there is no
//! wrap; if exactly one is set the sum is >= 2^63 and must wrap for z' to be < 2^63). With
//! arithmetic shifts this gives exactly
//!   floor(z'/2^d) = (B >>a d) + (A >>a d) + 2^(64-d) (B63 AND A63) + e,  e in {0, 1}
//! (e = 0 for Ã), so the local fast truncation is corrected by one bit product c = A63 B63
//! (taken mod 2^d, since it is multiplied by 2^(64-d)). B63 is R0's bit, A63 is known to both
//! R1 and R2:
//! - R0 sends μ = B63 - ρ (mod 2^d) to R2, in the same message as t0 - δ (ρ from the key of R0
//!   and R1), so [B63] = (μ, ρ) split between R2 and R1;
//! - R1 computes y1 = A63 ρ - ζ1, R2 computes y2 = A63 μ - ζ0 (ζ1 from the key of R0 and R1,
//!   ζ0 from the key of R0 and R2), and they swap them: y1 + y2 = c - ζ0 - ζ1.
//!
//! So (ζ0, ζ1, y1 + y2) is a replicated sharing of c, added (times 2^(64-d)) to the three
//! components. The extra cost is three d-bit values per element in all (one from each party),
//! and one more round for R1 and R2 after they know A63: in the fused product they learn it from
//! the swap of the first round, so the product stays at latency 2 and costs 26.25 bytes per
//! element at d = 18 (30.75 when whole words of A were swapped; an earlier form used oblivious
//! transfers: six d-bit values, 37.5 bytes), and 28.5 at d = 36 (the scaled polynomial jobs).
//! Error: within 1.5 ulp in a fused product; floor(z / 2^d) or that + 1 for the standalone
//! truncation (there A = x_2 is known whole); never a large error while |z| < 2^62 - 2^(d+1).
//!
//! Every per-element step above (PRF draws, shifts, the packing of μ and y, the bytes of the
//! outgoing frames) runs in fused chunked passes (`crate::fused`): a 1M-element product touches
//! each of its vectors about once and allocates no full-length temporary. The output vectors'
//! final values are formed in cache (a chunk of scratch memory at R0, a pool of piece buffers
//! at R1 and R2: `APiece`) and a large vector gets them with streaming stores
//! (`fused::STREAM_MIN`), so its memory is written once and never read first: the passes of
//! a product are limited by memory bandwidth here (its first pass alone reads 32 MB per party
//! at 1M). Every message goes
//! out in pieces (`fused::PIECE` elements) as its pass makes them, and R1 and R2 pipeline their
//! passes over the pieces (`R12Stages`): a piece's next pass runs as soon as the other
//! party's piece is in, while the piece is still in cache, and the passes of the next piece
//! fill the wait. Same bytes and rounds: a message's later pieces are metered as its
//! continuation (`Ctx::send_piece`), since they depend on nothing received after its first.
//!
//! What is opened and why it is safe, per party (all masks are fresh PRF outputs of a key the
//! receiver does not hold):
//! - R1 receives the high bits of z_2 - t (masked by t) and y2 = A63 μ - ζ0 (masked by ζ0).
//! - R2 receives the high bits of z_1 + s (masked by s), t0 - δ (masked by δ),
//!   μ = B63 - ρ (masked by ρ) and y1 = A63 ρ - ζ1 (masked by ζ1).
//! - R0 receives nothing.

use ring::conv::{col2out, im2col, kernel_matrix, ConvGeometry, ConvPadding};
use std::borrow::Cow;
use std::mem::MaybeUninit;

use ring::{gemm, matmul_dims, RingTensor};

use crate::ashare::AShare;
use crate::config::TruncMethod;
use crate::error::{MpcError, Result};
use crate::fused::{
    self, piece_lens, pieces, with_scratch, Cut, Frame, Fresh, FreshCut, FreshPiece, Lag,
};
use crate::party::{Ctx, Party};
use crate::wire::{check_len, decode_words, packed_len, split_frame, unpack_into};

// PRF purposes inside one arithmetic protocol invocation.
const P_ZERO: u32 = 0;
const P_DELTA: u32 = 1;
/// The d-bit values of the robust correction (ρ and ζ1, or ζ0).
const P_NARROW: u32 = 2;
const P_MASK: u32 = 6;

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
/// - fast: 1 round, R0 8n bytes, R1 and R2 ceil(n(64 - d) / 8). At d = 18: 19.5 bytes per
///   element in total.
/// - robust: R0 8n + ceil(nd / 8) bytes, R1 and R2 ceil(n(64 - d) / 8) + ceil(nd / 8); R0 1
///   round, R1 and R2 2; latency 2. At d = 18: 26.25 bytes per element in total.
pub fn product_cost(n: usize, trunc: Option<(TruncMethod, u32)>) -> Cost {
    let n8 = 8 * n as u64;
    match trunc {
        None => Cost {
            bytes: [n8; 3],
            rounds: [1; 3],
            latency: 1,
        },
        Some((TruncMethod::Fast, d)) => {
            let high = packed_len(n, 64 - d) as u64;
            Cost {
                bytes: [n8, high, high],
                rounds: [1; 3],
                latency: 1,
            }
        }
        Some((TruncMethod::Robust, d)) => {
            let one = packed_len(n, d) as u64;
            let high = packed_len(n, 64 - d) as u64;
            Cost {
                bytes: [n8 + one, high + one, high + one],
                rounds: [1, 2, 2],
                latency: 2,
            }
        }
    }
}

/// Stated cost of truncating a replicated sharing of n elements by d bits.
///
/// - fast: R0 sends 8n bytes in 1 round, R1 and R2 nothing (the rotation moves R0 around).
/// - robust: R0 8n + ceil(nd / 8), R1 and R2 ceil(nd / 8); 1 round each, latency 2 (R2 answers
///   R1 once R0's message is in).
pub fn trunc_cost(n: usize, method: TruncMethod, d: u32) -> Cost {
    let n8 = 8 * n as u64;
    match method {
        TruncMethod::Fast => Cost {
            bytes: [n8, 0, 0],
            rounds: [1, 0, 0],
            latency: 1,
        },
        TruncMethod::Robust => {
            let one = packed_len(n, d) as u64;
            Cost {
                bytes: [n8 + one, one, one],
                rounds: [1; 3],
                latency: 2,
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
    assert_eq!(a.len(), b.len(), "zip_map: lengths");
    fused::collect_words(a.len(), &|start, len| {
        let r = start..start + len;
        a[r.clone()].iter().zip(&b[r]).map(|(&x, &y)| f(x, y))
    })
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

/// Where R0's truncation pass gets B, per element (see [`Party::trunc_r0`]).
#[derive(Clone, Copy)]
enum Input {
    /// The vector already holds B.
    Ready,
    /// A fused product: the vector holds z_0; B = z_0 + t - s.
    Masked,
}

/// Where R1 and R2 find A, the value their side of a truncation shifts (see
/// [`Party::trunc_r12`]).
enum Split<'t> {
    /// A standalone truncation: A = x_2, which both hold whole.
    Known(Vec<u64>),
    /// A fused product: each holds its 3-out-of-3 share z of the product (in the buffer, or
    /// computed per chunk from the terms), its term of A is z plus its mask, and they swap the
    /// terms' high 64 - d bits (module docs: A is approximated by their sum shifted back up).
    Swapped(ZBuf, &'t Terms<'t>),
}

/// The robust correction's PRF values (ρ, ζ0, ζ1) matter only mod 2^d: each is packed into d
/// bits or shifted up by 64 - d before use. They are drawn as 32-bit lanes of the keystream
/// (whole words when d > 32) rather than packed d-bit fields: a little more AES output, but
/// reading one is an array access, where unpacking a field cost several times the AES.
#[derive(Clone, Copy)]
enum Lanes<'a> {
    /// d <= 32: value i is the keystream's 32-bit lane i.
    Narrow(&'a [u32]),
    /// d > 32: value i is word i.
    Wide(&'a [u64]),
}

impl Lanes<'_> {
    /// Whether d-bit values need whole words.
    fn wide(d: u32) -> bool {
        d > 32
    }

    /// Words holding `count` values.
    fn words_for(count: usize, d: u32) -> usize {
        if Self::wide(d) {
            count
        } else {
            count.div_ceil(2)
        }
    }
}

/// Runs `$body` with `$v` bound to the values of [`Lanes`] as a slice of their own type
/// (`&[u32]` or `&[u64]`; only the low d bits of each are defined): one copy of the loop per
/// lane type, so that each is a plain zip of slices, vectorised, with no per-element branch
/// or bounds check.
macro_rules! with_lanes {
    ($lanes:expr, $v:ident => $body:expr) => {
        match $lanes {
            Lanes::Narrow($v) => $body,
            Lanes::Wide($v) => {
                // The body widens each value with `into`, the identity for words.
                #[allow(clippy::useless_conversion)]
                let out = $body;
                out
            }
        }
    };
}

/// Words of the PRF values (`per` per element) of `len` elements.
fn narrow_words(len: usize, per: usize, d: u32) -> usize {
    Lanes::words_for(per * len, d)
}

/// Draws the PRF values (`per` per element, [`Lanes`]) of elements `start..start + len` from
/// the key of relative component `comp` into `buf` (`narrow_words` long): words from
/// `narrow_words(start, per, d)` on of one stream, so that a chunk draws just its part (`start`
/// is even). Value k of element `start + j` is value `j * per + k` of the result.
fn narrow_chunk<'b>(
    cx: &Ctx<'_>,
    comp: usize,
    start: usize,
    per: usize,
    d: u32,
    buf: &'b mut [u64],
) -> Lanes<'b> {
    let off = narrow_words(start, per, d);
    cx.prf_rel(comp).fill_at(cx.nonce, P_NARROW, off, buf);
    if Lanes::wide(d) {
        Lanes::Wide(buf)
    } else {
        // Lane i is the low half of word i / 2 for even i, the high half for odd i (little
        // endian; both parties read the same lanes either way).
        Lanes::Narrow(bytemuck::cast_slice(buf))
    }
}

/// Writes elements `start..start + z.len()` of a product's z into fresh slots ([`Terms::Chunks`]).
pub(crate) type ChunkFill<'a> =
    dyn for<'z> Fn(usize, &'z mut [MaybeUninit<u64>]) -> &'z mut [u64] + Sync + 'a;

/// `f` as a [`ChunkFill`] (a closure gets the signature's tied lifetimes only from a bound).
pub(crate) fn chunk_fill<F>(f: F) -> F
where
    F: for<'z> Fn(usize, &'z mut [MaybeUninit<u64>]) -> &'z mut [u64] + Sync,
{
    f
}

/// A product's local 3-out-of-3 share z, as the first pass over it finds it.
pub(crate) enum Terms<'a> {
    /// Computed already (matmul, conv, the nonlinear jobs).
    Ready(Vec<u64>),
    /// x y elementwise from (x_i, x_{i+1}, y_i, y_{i+1}) of equal lengths, computed a chunk at
    /// a time by the first pass: z is never written out and read back.
    Product([&'a [u64]; 4]),
    /// x x from (x_i, x_{i+1}), likewise.
    Square([&'a [u64]; 2]),
    /// n elements, `fill(start, z)` writing elements `start..start + z.len()` into the fresh
    /// slots `z` and returning them written (the nonlinear engine's fused multiply-adds).
    Chunks(usize, &'a ChunkFill<'a>),
}

impl<'a> Terms<'a> {
    fn len(&self) -> usize {
        match self {
            Terms::Ready(z) => z.len(),
            Terms::Product(x) => x[0].len(),
            Terms::Square(x) => x[0].len(),
            Terms::Chunks(n, _) => *n,
        }
    }

    /// Writes elements `start..start + out.len()` of z into `out` and returns them.
    fn fill<'z>(&self, start: usize, out: &'z mut [MaybeUninit<u64>]) -> &'z mut [u64] {
        let r = start..start + out.len();
        match self {
            Terms::Product([a0, a1, b0, b1]) => {
                let ins = a0[r.clone()]
                    .iter()
                    .zip(&a1[r.clone()])
                    .zip(&b0[r.clone()])
                    .zip(&b1[r]);
                for (o, (((&p, &q), &u), &v)) in out.iter_mut().zip(ins) {
                    o.write(
                        p.wrapping_mul(u.wrapping_add(v))
                            .wrapping_add(q.wrapping_mul(u)),
                    );
                }
            }
            Terms::Square([a0, a1]) => {
                for (o, (&p, &q)) in out.iter_mut().zip(a0[r.clone()].iter().zip(&a1[r])) {
                    o.write(p.wrapping_mul(p.wrapping_add(q.wrapping_mul(2))));
                }
            }
            Terms::Chunks(_, fill) => return fill(start, out),
            Terms::Ready(_) => unreachable!("a ready z is not computed"),
        }
        // SAFETY: the inputs were sliced to `out`'s length (a short one panics above), so the
        // loop wrote every slot.
        unsafe { fused::assume_written(out) }
    }

    /// The vector the first pass works in, and what it computes there.
    fn split(self) -> (ZBuf, Terms<'a>) {
        match self {
            Terms::Ready(z) => (ZBuf::Ready(z), Terms::Ready(Vec::new())),
            lazy => (ZBuf::Fresh(Fresh::new(lazy.len())), lazy),
        }
    }
}

/// Where the first pass of a product keeps z.
enum ZBuf {
    Ready(Vec<u64>),
    Fresh(Fresh),
}

impl ZBuf {
    fn cut(&mut self) -> ZCut<'_> {
        match self {
            ZBuf::Ready(z) => ZCut::Ready(Cut::words(&mut z[..])),
            ZBuf::Fresh(f) => ZCut::Fresh(f.cut()),
        }
    }

    fn into_vec(self) -> Vec<u64> {
        match self {
            ZBuf::Ready(z) => z,
            ZBuf::Fresh(f) => f.into_vec(),
        }
    }

    fn len(&self) -> usize {
        match self {
            ZBuf::Ready(z) => z.len(),
            ZBuf::Fresh(f) => f.len(),
        }
    }

    /// The buffer as consecutive pieces of `lens` elements.
    fn pieces(&mut self, lens: &[usize]) -> Vec<VPiece<'_>> {
        match self {
            ZBuf::Ready(z) => {
                let mut rest = &mut z[..];
                lens.iter()
                    .map(|&m| {
                        let (piece, after) = std::mem::take(&mut rest).split_at_mut(m);
                        rest = after;
                        VPiece::Ready(piece)
                    })
                    .collect()
            }
            ZBuf::Fresh(f) => f
                .pieces(lens.iter().copied())
                .into_iter()
                .map(VPiece::Fresh)
                .collect(),
        }
    }
}

/// A piece of a [`ZBuf`]: written already, or to be written by the first pass over it.
enum VPiece<'a> {
    Ready(&'a mut [u64]),
    Fresh(FreshPiece<'a>),
}

impl<'a> VPiece<'a> {
    fn cut(&mut self) -> ZCut<'_> {
        match self {
            VPiece::Ready(z) => ZCut::Ready(Cut::words(z)),
            VPiece::Fresh(p) => ZCut::Fresh(p.cut()),
        }
    }

    /// The piece's words (a fresh piece once a pass has written it whole).
    fn into_written(self) -> &'a mut [u64] {
        match self {
            VPiece::Ready(z) => z,
            VPiece::Fresh(p) => p.into_written(),
        }
    }
}

/// R1's and R2's piece of A between the stages of a truncation ([`R12Stages`]): a fused
/// product's piece is formed in a buffer of this thread's pool (at most three pieces are in
/// flight, so the pool holds three buffers that are likely still in cache) and written into
/// its fresh vector by the last stage ([`FreshCut::init_streamed`]), so a large vector is
/// written once and never read from memory first; a standalone truncation works on A in
/// place.
enum APiece<'v> {
    InPlace(&'v mut [u64]),
    Pooled(Vec<u64>, FreshPiece<'v>),
}

thread_local! {
    static PIECE_POOL: std::cell::RefCell<Vec<Vec<u64>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl<'v> APiece<'v> {
    fn new(piece: VPiece<'v>, m: usize) -> Self {
        match piece {
            VPiece::Ready(z) => APiece::InPlace(z),
            VPiece::Fresh(dest) => {
                let mut buf = PIECE_POOL
                    .with(|p| p.borrow_mut().pop())
                    .unwrap_or_default();
                if buf.len() < m {
                    buf.resize(m, 0);
                }
                APiece::Pooled(buf, dest)
            }
        }
    }

    fn is_pooled(&self) -> bool {
        matches!(self, APiece::Pooled(..))
    }

    fn vals(&mut self) -> &mut [u64] {
        self.parts().0
    }

    /// The values, and for a pooled piece the fresh chunk that the last stage's pass streams
    /// them to (then [`APiece::release`]).
    fn parts(&mut self) -> (&mut [u64], Option<FreshCut<'_>>) {
        match self {
            APiece::InPlace(z) => (z, None),
            APiece::Pooled(buf, dest) => (&mut buf[..dest.len()], Some(dest.cut())),
        }
    }

    /// After the last stage's pass wrote the values out: the buffer goes back to the pool.
    fn release(self) {
        if let APiece::Pooled(buf, dest) = self {
            dest.into_written();
            PIECE_POOL.with(|p| p.borrow_mut().push(buf));
        }
    }

    /// The last stage as a pass of its own: `last(at, vals)` on each chunk of the piece, which a
    /// pooled piece then streams to its fresh vector in the same pass.
    fn finish_with(mut self, last: &(impl Fn(usize, &mut [u64]) + Sync)) {
        let (vals, out) = self.parts();
        fused::run(vals.len(), (Cut::words(vals), out), &|at, _, (v, out)| {
            last(at, v.data);
            if let Some(out) = out {
                out.init_streamed(v.data);
            }
        });
        self.release();
    }
}

enum ZCut<'a> {
    Ready(Cut<'a, u64>),
    Fresh(FreshCut<'a>),
}

impl fused::Parts for ZCut<'_> {
    fn split_at(self, elem: usize) -> (Self, Self) {
        match self {
            ZCut::Ready(c) => {
                let (a, b) = c.split_at(elem);
                (ZCut::Ready(a), ZCut::Ready(b))
            }
            ZCut::Fresh(c) => {
                let (a, b) = c.split_at(elem);
                (ZCut::Fresh(a), ZCut::Fresh(b))
            }
        }
    }
}

impl<'a> ZCut<'a> {
    /// Elements `start..` of z (as many as the chunk holds): as found, or computed now.
    fn z(self, start: usize, terms: &Terms<'_>) -> &'a mut [u64] {
        match self {
            ZCut::Ready(c) => c.data,
            ZCut::Fresh(c) => c.init_with(|z| terms.fill(start, z)),
        }
    }

    /// [`ZCut::z`] for a pass that forms the chunk's final values and writes them out last
    /// ([`FreshCut::init_streamed`]): a ready z in place (and None), a fresh one computed into
    /// `scratch` (and the chunk to stream the values to).
    fn staged<'s>(
        self,
        start: usize,
        terms: &Terms<'_>,
        scratch: &'s mut [u64],
    ) -> (Option<FreshCut<'a>>, &'s mut [u64])
    where
        'a: 's,
    {
        match self {
            ZCut::Ready(c) => (None, c.data),
            ZCut::Fresh(c) => {
                let z = terms.fill(start, fused::as_uninit(&mut scratch[..c.len()]));
                (Some(c), z)
            }
        }
    }
}

/// The stages of R1's and R2's side of a truncation, one piece at a time
/// ([`Party::trunc_r12`]).
struct R12Stages<'c, 't> {
    cx: &'c Ctx<'c>,
    /// A fused product's terms (stage A runs), or None for a standalone truncation.
    terms: Option<&'t Terms<'t>>,
    robust: bool,
    d: u32,
    role: usize,
    other: usize,
}

impl R12Stages<'_, '_> {
    /// Stage A of piece `index` (elements `first..first + m`): in a fused product, form this
    /// party's term of A in `piece` and send its high 64 - d bits; returns A's piece (the term,
    /// or A itself in a standalone truncation).
    fn a<'v>(&self, index: usize, first: usize, m: usize, piece: VPiece<'v>) -> Result<APiece<'v>> {
        let mut a = APiece::new(piece, m);
        let Some(terms) = self.terms else {
            return Ok(a);
        };
        let (cx, d) = (self.cx, self.d);
        let nonce = cx.nonce;
        // z_1 + s at R1 and z_2 - t at R2, with s from the key of R0 and R1 (component 1) and
        // t from that of R0 and R2 (component 0).
        let (key, negate) = if self.role == 1 {
            (cx.prf_rel(1), false)
        } else {
            (cx.prf_rel(0), true)
        };
        let high = 64 - d;
        let computed = a.is_pooled();
        let mut frame = Frame::new(packed_len(m, high));
        fused::run(
            m,
            (Cut::words(a.vals()), frame.cut().packed(high)),
            &|at, _, (z, out)| {
                let start = first + at;
                let z = if computed {
                    terms.fill(start, fused::as_uninit(z.data))
                } else {
                    z.data
                };
                key.add_at(nonce, P_MASK, start, z, negate);
                z.iter_mut().for_each(|x| *x >>= d);
                out.put_packed(z, high);
            },
        );
        cx.send_piece(self.other, index, frame.into_vec())?;
        Ok(a)
    }

    /// Stage B of piece `index`: complete A (fused: with the other's high bits), shift it
    /// into c2 (`a`) and write the component shared with R0 into `c`; robust: add this party's
    /// d-bit term of the correction to c2 and send it.
    fn b<'v>(
        &self,
        index: usize,
        first: usize,
        m: usize,
        mut piece: APiece<'v>,
        mut c: FreshPiece<'_>,
    ) -> Result<Option<APiece<'v>>> {
        let (cx, d, robust) = (self.cx, self.d, self.robust);
        // The fast method's last stage is this one: its pass streams c2 out as well.
        let (a, c2_out) = piece.parts();
        let c2_out = if robust { None } else { c2_out };
        let nonce = cx.nonce;
        let high = 64 - d;
        let theirs = match self.terms {
            Some(_) => {
                let msg = cx.recv(self.other)?;
                check_len(cx.label, cx.abs(self.other), &msg, packed_len(m, high))?;
                Some(msg)
            }
            None => None,
        };
        let complete = |at: usize, a: &mut [u64]| {
            if let Some(msg) = &theirs {
                with_scratch(a.len(), |t| {
                    unpack_into(&msg[at * high as usize / 8..], high, t);
                    for (x, t) in a.iter_mut().zip(&*t) {
                        *x = x.wrapping_add(*t) << d;
                    }
                });
            }
        };
        let k = 64 - d;
        let offset = 1u64 << (62 - d);
        let narrow = if robust { packed_len(m, d) } else { 0 };
        let mut y = Frame::new(narrow);
        let parts = (Cut::words(&mut *a), c.cut(), y.cut().packed(d), c2_out);
        if self.role == 1 {
            let k1 = cx.prf_rel(1);
            fused::run(m, parts, &|at, len, (a, delta, y, c2_out)| {
                let start = first + at;
                complete(at, a.data);
                let words = if robust { narrow_words(len, 2, d) } else { 0 };
                // δ is formed in scratch memory and streamed out last (a fresh vector).
                with_scratch(2 * len + words, |buf| {
                    let (dl, rest) = buf.split_at_mut(len);
                    let (terms, w) = rest.split_at_mut(len);
                    k1.fill_at(nonce, P_DELTA, start, dl);
                    if !robust {
                        a.data.iter_mut().for_each(|x| *x = ceil_shift(*x, d));
                        if let Some(out) = c2_out {
                            out.init_streamed(a.data);
                        }
                    } else {
                        let r = narrow_chunk(cx, 1, start, 2, d, w);
                        with_lanes!(r, r => {
                            let elems = a.data.iter_mut().zip(dl.iter_mut()).zip(&mut *terms);
                            for (((x, dl), t), r) in elems.zip(r.chunks_exact(2)) {
                                let (rho, z1): (u64, u64) = (r[0].into(), r[1].into());
                                *t = (rho & (*x >> 63).wrapping_neg()).wrapping_sub(z1);
                                // Our own term of the correction now; the other's in stage C.
                                *x = ceil_shift(*x, d).wrapping_sub(offset).wrapping_add(*t << k);
                                *dl = dl.wrapping_add(z1 << k);
                            }
                        });
                        y.put_packed(terms, d);
                    }
                    delta.init_streamed(dl);
                });
            });
        } else {
            let frame = cx.recv(0)?;
            let from0 = split_frame(cx.label, cx.abs(0), &frame, &[8 * m, narrow])?;
            fused::run(m, parts, &|at, len, (a, c, y, c2_out)| {
                let start = first + at;
                c.init_streamed_le(&from0[0][8 * at..8 * (at + len)]);
                complete(at, a.data);
                if !robust {
                    a.data.iter_mut().for_each(|x| *x = ceil_shift(*x, d));
                    if let Some(out) = c2_out {
                        out.init_streamed(a.data);
                    }
                    return;
                }
                let words = narrow_words(len, 1, d);
                with_scratch(words + 2 * len, |buf| {
                    let (w, rest) = buf.split_at_mut(words);
                    let (terms, mu) = rest.split_at_mut(len);
                    let r = narrow_chunk(cx, 0, start, 1, d, w);
                    unpack_into(&from0[1][at * d as usize / 8..], d, mu);
                    with_lanes!(r, r => {
                        let elems = a.data.iter_mut().zip(&mut *terms).zip(&*mu);
                        for (((x, t), mu), &z0) in elems.zip(r) {
                            let z0: u64 = z0.into();
                            *t = (mu & (*x >> 63).wrapping_neg()).wrapping_sub(z0);
                            *x = ceil_shift(*x, d).wrapping_sub(offset).wrapping_add(*t << k);
                        }
                    });
                    y.put_packed(terms, d);
                });
            });
        }
        c.into_written();
        if robust {
            cx.send_piece(self.other, index, y.into_vec())?;
        }
        if robust {
            return Ok(Some(piece));
        }
        piece.release();
        Ok(None)
    }

    /// Stage C (robust): add the other's term of the correction, times 2^(64 - d), to c2.
    fn c(&self, m: usize, piece: APiece<'_>) -> Result<()> {
        let (cx, d) = (self.cx, self.d);
        let theirs = cx.recv(self.other)?;
        check_len(cx.label, cx.abs(self.other), &theirs, packed_len(m, d))?;
        let k = 64 - d;
        piece.finish_with(&|at, a| {
            with_scratch(a.len(), |other| {
                unpack_into(&theirs[at * d as usize / 8..], d, other);
                for (x, y) in a.iter_mut().zip(&*other) {
                    *x = x.wrapping_add(y << k);
                }
            });
        });
        Ok(())
    }
}

impl Party {
    /// The common end of every product: P_i holds `z`, its 3-out-of-3 share of the product, of
    /// shape `shape`; returns the replicated sharing of z (raw) or of z truncated by `d` bits.
    /// Cost: [`product_cost`].
    pub(crate) fn finish_product(
        &self,
        cx: &Ctx<'_>,
        z: Vec<u64>,
        shape: &[usize],
        trunc: Option<(TruncMethod, u32)>,
    ) -> Result<AShare> {
        self.finish_terms(cx, Terms::Ready(z), shape, trunc)
    }

    /// [`Party::finish_product`] for z in any form of [`Terms`].
    pub(crate) fn finish_terms(
        &self,
        cx: &Ctx<'_>,
        terms: Terms<'_>,
        shape: &[usize],
        trunc: Option<(TruncMethod, u32)>,
    ) -> Result<AShare> {
        let n = terms.len();
        let (mut zbuf, terms) = terms.split();
        let me = cx.id();
        let nonce = cx.nonce;
        let Some((method, d)) = trunc else {
            // Plain reshare: send z_i + α_i to P_{i-1}, receive z_{i+1} + α_{i+1} from P_{i+1}.
            let (prev, next) = ((me + 2) % 3, (me + 1) % 3);
            let (own, nxt) = (self.comp_prf(me), self.comp_prf(me + 1));
            let mut frame = Frame::new(8 * n);
            let parts = (zbuf.cut(), frame.cut().words());
            fused::run(n, parts, &|start, _, (z, out)| {
                let z = z.z(start, &terms);
                own.add_at(nonce, P_ZERO, start, z, false);
                nxt.add_at(nonce, P_ZERO, start, z, true);
                out.put_words(z);
            });
            let z = zbuf.into_vec();
            cx.send_abs(prev, frame.into_vec())?;
            let other = decode_words(cx.label, next, &cx.recv_abs(next)?, n)?;
            return Ok(AShare::new_unchecked(
                me,
                tensor(shape, z)?,
                tensor(shape, other)?,
            ));
        };
        check_trunc_bits(cx.label, d)?;
        // Masks that sum to zero: B = z_0 + t - s at R0, z_1 + s at R1, z_2 - t at R2, with s
        // from the key of R0 and R1 (component 1) and t from that of R0 and R2 (component 0).
        let role = cx.role();
        if role == 0 {
            return self.trunc_r0(cx, zbuf, &terms, Input::Masked, shape, method, d);
        }
        self.trunc_r12(cx, Split::Swapped(zbuf, &terms), shape, method, d)
    }

    /// R0's side of a truncation (module docs): B = `v` completed per `input`.
    /// - fast: c0 = floor((B + K) / 2^d) - δ (K = 1.5 2^d in a fused product, else 0), sent to
    ///   R2; R0 keeps (c0, δ).
    /// - robust: c0 = floor((B + 2^62 + K) / 2^d) - δ + ζ0 2^(64-d) (sent to R2 whole, so R2 adds
    ///   nothing) and c1 = δ + ζ1 2^(64-d), with μ = B63 - ρ packed behind c0 in the same
    ///   message.
    #[allow(clippy::too_many_arguments)]
    fn trunc_r0(
        &self,
        cx: &Ctx<'_>,
        mut v: ZBuf,
        terms: &Terms<'_>,
        input: Input,
        shape: &[usize],
        method: TruncMethod,
        d: u32,
    ) -> Result<AShare> {
        let n = v.len();
        let nonce = cx.nonce;
        let (k0, k1) = (cx.prf_rel(0), cx.prf_rel(1));
        let complete = |start: usize, b: &mut [u64]| {
            if let Input::Masked = input {
                k0.add_at(nonce, P_MASK, start, b, false);
                k1.add_at(nonce, P_MASK, start, b, true);
            }
        };
        let robust = method == TruncMethod::Robust;
        // In a fused product R1 and R2 drop the low d bits of A (L < 2^(d+1) in all), which
        // 1.5 2^d centres; the robust method also adds 2^62 to move z into [0, 2^63) (module
        // docs).
        let centre = match input {
            Input::Masked => 3u64 << (d - 1),
            _ => 0,
        };
        let offset = (1u64 << 62) + centre;
        let mut delta = Fresh::new(n);
        let lens = piece_lens(n);
        let all = pieces(n)
            .zip(v.pieces(&lens))
            .zip(delta.pieces(lens.iter().copied()));
        for (j, (((first, m), mut v_piece), mut delta_piece)) in all.enumerate() {
            let narrow = if robust { packed_len(m, d) } else { 0 };
            let mut frame = Frame::new(8 * m + narrow);
            let (c0_bytes, mu_bytes) = frame.cut().split_bytes(8 * m);
            let parts = (
                v_piece.cut(),
                delta_piece.cut(),
                c0_bytes.words(),
                mu_bytes.packed(d),
            );
            fused::run(m, parts, &|at, len, (b, delta, c0, mu)| {
                let start = first + at;
                let k = 64 - d;
                let (n1, n0) = if robust {
                    (narrow_words(len, 2, d), narrow_words(len, 1, d))
                } else {
                    (0, 0)
                };
                let bits = if robust { len } else { 0 };
                // c0 and δ are formed in scratch memory and streamed out last (fresh vectors).
                with_scratch(2 * len + n1 + n0 + bits, |buf| {
                    let (zs, rest) = buf.split_at_mut(len);
                    let (dl, rest) = rest.split_at_mut(len);
                    let (b_out, b) = b.staged(start, terms, zs);
                    k1.fill_at(nonce, P_DELTA, start, dl);
                    complete(start, b);
                    if robust {
                        let (w1, rest) = rest.split_at_mut(n1);
                        let (w0, masked_bits) = rest.split_at_mut(n0);
                        let r1 = narrow_chunk(cx, 1, start, 2, d, w1);
                        let r0 = narrow_chunk(cx, 0, start, 1, d, w0);
                        with_lanes!(r1, r1 => with_lanes!(r0, r0 => {
                            let elems = b.iter_mut().zip(dl.iter_mut()).zip(&mut *masked_bits);
                            for ((((x, dl), m), r1), &z0) in elems.zip(r1.chunks_exact(2)).zip(r0) {
                                let b = x.wrapping_add(offset);
                                let (rho, z1, z0): (u64, u64, u64) =
                                    (r1[0].into(), r1[1].into(), z0.into());
                                *m = (b >> 63).wrapping_sub(rho);
                                *x = floor_shift(b, d).wrapping_sub(*dl).wrapping_add(z0 << k);
                                *dl = dl.wrapping_add(z1 << k);
                            }
                        }));
                        mu.put_packed(masked_bits, d);
                    } else {
                        for (x, dl) in b.iter_mut().zip(dl.iter()) {
                            *x = floor_shift(x.wrapping_add(centre), d).wrapping_sub(*dl);
                        }
                    }
                    c0.put_words(b);
                    if let Some(out) = b_out {
                        out.init_streamed(b);
                    }
                    delta.init_streamed(dl);
                });
            });
            v_piece.into_written();
            delta_piece.into_written();
            // Each piece goes out as soon as it is ready, so that R2 starts on it while R0
            // computes the next.
            cx.send_piece(2, j, frame.into_vec())?;
        }
        Ok(AShare::new_unchecked(
            cx.id(),
            tensor(shape, v.into_vec())?,
            tensor(shape, delta.into_vec())?,
        ))
    }

    /// R1's and R2's side of a truncation, over the pieces of [`pieces`], pipelined: while
    /// a piece waits for the other party's message, the next piece is computed, and a piece is
    /// still in cache when its later passes come (each pass over the whole vector used to read
    /// and write it from memory, the bottleneck with three processes on two cores). Per piece:
    /// - A (fused product only): each forms its term of A (z plus its mask) and sends the high
    ///   64 - d bits (round 1);
    /// - B: A is completed (with the other's high bits), shifted, and R1 holds (δ, ceil(A /
    ///   2^d)), R2 (ceil(A / 2^d), c0 from R0's piece); robust: each also forms its d-bit term
    ///   of c - ζ0 - ζ1 (R1: A63 ρ - ζ1; R2: A63 μ - ζ0, μ from R0's piece), adds it to c2
    ///   and sends it (the fused product's round 2);
    /// - C (robust): adds the other's term, times 2^(64 - d).
    ///
    /// Piece j's B runs after piece j + 1's A, and its C after piece j + 1's B.
    fn trunc_r12(
        &self,
        cx: &Ctx<'_>,
        split: Split<'_>,
        shape: &[usize],
        method: TruncMethod,
        d: u32,
    ) -> Result<AShare> {
        let (mut v, terms) = match split {
            Split::Known(a) => (ZBuf::Ready(a), None),
            Split::Swapped(z, terms) => (z, Some(terms)),
        };
        let n = v.len();
        let role = cx.role();
        let other = 3 - role;
        let robust = method == TruncMethod::Robust;
        let lens = piece_lens(n);
        let mut c_r0 = Fresh::new(n);
        {
            let stage = R12Stages {
                cx,
                terms,
                robust,
                d,
                role,
                other,
            };
            let todo = pieces(n)
                .zip(v.pieces(&lens))
                .zip(c_r0.pieces(lens.iter().copied()))
                .enumerate();
            // Piece j's stage B runs after piece j + 1's stage A, its C after j + 1's B.
            let mut after_b = Lag::new();
            let stage_c = |(m, a)| stage.c(m, a);
            let mut stage_b = |(j, first, m, a, c_piece)| {
                if let Some(a) = stage.b(j, first, m, a, c_piece)? {
                    after_b.push((m, a), stage_c)?;
                }
                Ok::<(), MpcError>(())
            };
            let mut after_a = Lag::new();
            for (j, (((first, m), v_piece), c_piece)) in todo {
                let a = stage.a(j, first, m, v_piece)?;
                after_a.push((j, first, m, a, c_piece), &mut stage_b)?;
            }
            after_a.finish(&mut stage_b)?;
            after_b.finish(stage_c)?;
        }
        let (v, c_r0) = (v.into_vec(), c_r0.into_vec());
        // R1 holds (c_1, c_2), R2 holds (c_2, c_0): `c_r0` is the component shared with R0.
        let (mine_comp, next_comp) = if role == 1 { (c_r0, v) } else { (v, c_r0) };
        Ok(AShare::new_unchecked(
            cx.id(),
            tensor(shape, mine_comp)?,
            tensor(shape, next_comp)?,
        ))
    }

    /// Truncate a replicated sharing by `d` bits (for products with public values, which are
    /// local). The split is B = x_0 + x_1 (R0) and A = x_2 (R1 and R2 already both hold it), so
    /// A63 is known at once: R1 sends its correction term in the first round, R2 once R0's μ is
    /// in (latency 2 for the robust method, 1 for the fast one).
    /// Cost: [`trunc_cost`]. Opened: as for the fused product (R1 sees y2, R2 sees c0, μ and y1,
    /// each masked by a value of a key the receiver does not hold).
    pub fn trunc(&self, x: &AShare, d: u32, method: TruncMethod) -> Result<AShare> {
        let cx = self.begin("trunc");
        check_trunc_bits(cx.label, d)?;
        if cx.role() == 0 {
            let b = zip_map(
                x.comp(cx.abs(0)).data(),
                x.comp(cx.abs(1)).data(),
                u64::wrapping_add,
            );
            let ready = Terms::Ready(Vec::new());
            self.trunc_r0(
                &cx,
                ZBuf::Ready(b),
                &ready,
                Input::Ready,
                x.shape(),
                method,
                d,
            )
        } else {
            let a = x.comp(cx.abs(2)).data().to_vec();
            self.trunc_r12(&cx, Split::Known(a), x.shape(), method, d)
        }
    }

    fn method(&self, m: Option<TruncMethod>) -> TruncMethod {
        m.unwrap_or(self.config().trunc)
    }

    // ---- elementwise ------------------------------------------------------------------------

    /// Both operands broadcast to their common shape (borrowed when equal already).
    fn broadcast_pair<'x>(
        x: &'x AShare,
        y: &'x AShare,
    ) -> Result<(Cow<'x, AShare>, Cow<'x, AShare>)> {
        if x.shape() == y.shape() {
            return Ok((Cow::Borrowed(x), Cow::Borrowed(y)));
        }
        let s = ring::broadcast_shape("mul", x.shape(), y.shape())?;
        Ok((
            Cow::Owned(x.broadcast_to(&s)?),
            Cow::Owned(y.broadcast_to(&s)?),
        ))
    }

    /// The elementwise product's terms (equal shapes).
    fn product_terms<'x>(x: &'x AShare, y: &'x AShare) -> Terms<'x> {
        Terms::Product([
            x.mine().data(),
            x.next().data(),
            y.mine().data(),
            y.next().data(),
        ])
    }

    /// Ring product without rescaling (integers, bits): 1 round, 8n bytes per party.
    pub fn mul_raw(&self, x: &AShare, y: &AShare) -> Result<AShare> {
        let cx = self.begin("mul_raw");
        let (x, y) = Self::broadcast_pair(x, y)?;
        self.finish_terms(&cx, Self::product_terms(&x, &y), x.shape(), None)
    }

    /// Fixed-point elementwise product (numpy broadcasting) with the session's truncation.
    /// Cost: [`product_cost`] with d = f.
    pub fn mul(&self, x: &AShare, y: &AShare) -> Result<AShare> {
        self.mul_with(x, y, None)
    }

    /// [`Party::mul`] with the truncation method overridden.
    pub fn mul_with(&self, x: &AShare, y: &AShare, method: Option<TruncMethod>) -> Result<AShare> {
        let cx = self.begin("mul");
        let (x, y) = Self::broadcast_pair(x, y)?;
        self.finish_terms(
            &cx,
            Self::product_terms(&x, &y),
            x.shape(),
            Some((self.method(method), self.frac_bits())),
        )
    }

    /// Fixed-point square; same cost as [`Party::mul`], one multiplication less locally.
    pub fn square(&self, x: &AShare) -> Result<AShare> {
        let cx = self.begin("square");
        self.finish_terms(
            &cx,
            Terms::Square([x.mine().data(), x.next().data()]),
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
