//! `BShare`: one party's view of a replicated XOR sharing of a tensor of `len` values of `bits`
//! bits each, stored *bit-sliced*: plane k holds bit k of every value, 64 values per word. An AND
//! of two planes is then one word operation for 64 values, and every level of an adder circuit
//! over a whole tensor is one batch of word operations and one message.
//!
//! Layout: `words = ceil(len / 64)`; plane k occupies words [k * words, (k + 1) * words); value j
//! is bit j % 64 of word j / 64 of each plane. Bits past `len` in the last word are kept zero.
//! P_i holds components (b_i, b_{i+1}) as (`mine`, `next`), as for arithmetic shares.

use net::PartyId;

use crate::error::{MpcError, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BShare {
    id: PartyId,
    bits: usize,
    len: usize,
    mine: Vec<u64>,
    next: Vec<u64>,
}

/// Words per plane for `len` values.
pub fn words_for(len: usize) -> usize {
    len.div_ceil(64)
}

/// Mask of the valid bits in the last word of a plane of `len` values.
fn tail_mask(len: usize) -> u64 {
    match len % 64 {
        0 => u64::MAX,
        r => (1u64 << r) - 1,
    }
}

/// Transpose a 64 x 64 bit matrix in place: afterwards bit c of row r is what bit r of row c was.
/// Six rounds of block swaps; each inner loop runs over contiguous rows so that it vectorises.
#[inline(always)]
pub fn transpose64(a: &mut [u64; 64]) {
    let mut j = 32;
    let mut m: u64 = 0x0000_0000_FFFF_FFFF;
    while j != 0 {
        let mut base = 0;
        while base < 64 {
            for k in base..base + j {
                let t = ((a[k] >> j) ^ a[k + j]) & m;
                a[k + j] ^= t;
                a[k] ^= t << j;
            }
            base += 2 * j;
        }
        j >>= 1;
        m ^= m << j;
    }
}

/// The planes of a new bit-sliced tensor as one output of a fused pass (`crate::fused::run`):
/// the pass hands each chunk's values to [`PlaneCut::put`], which transposes them into the
/// chunk's words of every plane, so the values are never stored whole.
pub(crate) struct PlaneCut<'a> {
    planes: Vec<&'a mut [u64]>,
}

impl<'a> PlaneCut<'a> {
    /// `out` holds the planes of `words` words each, plane-major.
    pub fn new(out: &'a mut [u64], words: usize) -> Self {
        PlaneCut {
            planes: out.chunks_mut(words.max(1)).collect(),
        }
    }

    /// Writes the low bits of the chunk's values (as many as the chunk has elements).
    pub fn put(&mut self, vals: &[u64]) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present.
            unsafe { put_planes_avx2(vals, &mut self.planes) };
            return;
        }
        put_planes(vals, &mut self.planes)
    }
}

impl crate::fused::Parts for PlaneCut<'_> {
    /// `elem` is a multiple of 64 (a chunk boundary): one word of each plane per 64 elements.
    fn split_at(self, elem: usize) -> (Self, Self) {
        let (mut lo, mut hi) = (Vec::new(), Vec::new());
        for plane in self.planes {
            let (a, b) = plane.split_at_mut((elem / 64).min(plane.len()));
            lo.push(a);
            hi.push(b);
        }
        (PlaneCut { planes: lo }, PlaneCut { planes: hi })
    }
}

#[inline(always)]
fn put_planes(vals: &[u64], planes: &mut [&mut [u64]]) {
    let mut blk = [0u64; 64];
    for (b, chunk) in vals.chunks(64).enumerate() {
        blk[..chunk.len()].copy_from_slice(chunk);
        blk[chunk.len()..].fill(0);
        transpose64(&mut blk);
        for (plane, &w) in planes.iter_mut().zip(&blk) {
            plane[b] = w;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn put_planes_avx2(vals: &[u64], planes: &mut [&mut [u64]]) {
    put_planes(vals, planes)
}

/// Bit-slice `vals`: the low `bits` bits of each value into `bits` planes (plane-major).
pub fn to_planes(vals: &[u64], bits: usize) -> Vec<u64> {
    let words = words_for(vals.len());
    let mut out = vec![0u64; bits * words];
    PlaneCut::new(&mut out, words).put(vals);
    out
}

/// Inverse of [`to_planes`]: `len` values whose low `bits` bits come from the planes.
pub fn from_planes(planes: &[u64], bits: usize, len: usize) -> Vec<u64> {
    if bits == 1 {
        // The common case (comparison results, bits to inject): no transpose needed.
        return (0..len).map(|i| (planes[i / 64] >> (i % 64)) & 1).collect();
    }
    let words = words_for(len);
    let mut out = Vec::with_capacity(len);
    let mut blk = [0u64; 64];
    for b in 0..words {
        blk.fill(0);
        for (r, v) in blk.iter_mut().take(bits).enumerate() {
            *v = planes[r * words + b];
        }
        transpose64(&mut blk);
        let take = (len - b * 64).min(64);
        out.extend_from_slice(&blk[..take]);
    }
    out
}

impl BShare {
    pub fn from_parts(
        id: PartyId,
        bits: usize,
        len: usize,
        mine: Vec<u64>,
        next: Vec<u64>,
    ) -> Result<Self> {
        let want = bits * words_for(len);
        if mine.len() != want || next.len() != want {
            return Err(MpcError::invalid(
                "BShare::from_parts",
                format!(
                    "{bits} planes of {len} values need {want} words per component, got {} and {}",
                    mine.len(),
                    next.len()
                ),
            ));
        }
        Ok(BShare {
            id,
            bits,
            len,
            mine,
            next,
        })
    }

    pub(crate) fn new_unchecked(
        id: PartyId,
        bits: usize,
        len: usize,
        mine: Vec<u64>,
        next: Vec<u64>,
    ) -> Self {
        debug_assert_eq!(mine.len(), bits * words_for(len));
        debug_assert_eq!(next.len(), bits * words_for(len));
        BShare {
            id,
            bits,
            len,
            mine,
            next,
        }
    }

    /// The trivial sharing of public planes: (p, 0, 0).
    pub fn public(id: PartyId, bits: usize, len: usize, planes: Vec<u64>) -> Result<Self> {
        let z = vec![0u64; planes.len()];
        match id {
            0 => Self::from_parts(id, bits, len, planes, z),
            2 => Self::from_parts(id, bits, len, z, planes),
            _ => Self::from_parts(id, bits, len, z.clone(), z),
        }
    }

    pub fn id(&self) -> PartyId {
        self.id
    }
    pub fn bits(&self) -> usize {
        self.bits
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn words(&self) -> usize {
        words_for(self.len)
    }
    pub fn mine(&self) -> &[u64] {
        &self.mine
    }
    pub fn next(&self) -> &[u64] {
        &self.next
    }

    pub(crate) fn comp(&self, c: usize) -> &[u64] {
        if c % 3 == self.id {
            &self.mine
        } else if c % 3 == (self.id + 1) % 3 {
            &self.next
        } else {
            panic!("P{} does not hold component {c}: protocol bug", self.id)
        }
    }

    fn check_same(&self, op: &'static str, o: &Self) -> Result<()> {
        if (self.bits, self.len) != (o.bits, o.len) {
            return Err(MpcError::invalid(
                op,
                format!(
                    "{} planes of {} values vs {} planes of {} values",
                    self.bits, self.len, o.bits, o.len
                ),
            ));
        }
        Ok(())
    }

    pub fn xor(&self, o: &Self) -> Result<Self> {
        self.check_same("BShare::xor", o)?;
        let x = |a: &[u64], b: &[u64]| a.iter().zip(b).map(|(p, q)| p ^ q).collect();
        Ok(BShare::new_unchecked(
            self.id,
            self.bits,
            self.len,
            x(&self.mine, &o.mine),
            x(&self.next, &o.next),
        ))
    }

    /// XOR with public planes (flips component 0).
    pub fn xor_public(&self, planes: &[u64]) -> Result<Self> {
        if planes.len() != self.mine.len() {
            return Err(MpcError::invalid(
                "BShare::xor_public",
                "plane count differs",
            ));
        }
        let mut out = self.clone();
        let target = match self.id {
            0 => Some(&mut out.mine),
            2 => Some(&mut out.next),
            _ => None,
        };
        if let Some(t) = target {
            for (a, b) in t.iter_mut().zip(planes) {
                *a ^= b;
            }
        }
        Ok(out)
    }

    /// Bitwise NOT of every valid bit.
    pub fn not(&self) -> Self {
        let words = self.words();
        let mut ones = vec![u64::MAX; self.mine.len()];
        for p in 0..self.bits {
            if words > 0 {
                ones[p * words + words - 1] = tail_mask(self.len);
            }
        }
        self.xor_public(&ones).expect("same size")
    }

    /// AND with public planes (local).
    pub fn and_public(&self, planes: &[u64]) -> Result<Self> {
        if planes.len() != self.mine.len() {
            return Err(MpcError::invalid(
                "BShare::and_public",
                "plane count differs",
            ));
        }
        let a = |v: &[u64]| v.iter().zip(planes).map(|(p, q)| p & q).collect();
        Ok(BShare::new_unchecked(
            self.id,
            self.bits,
            self.len,
            a(&self.mine),
            a(&self.next),
        ))
    }

    /// Planes `start..start + count` as their own share.
    pub fn planes(&self, start: usize, count: usize) -> Result<Self> {
        if start + count > self.bits {
            return Err(MpcError::invalid(
                "BShare::planes",
                format!("planes {start}..{} of {}", start + count, self.bits),
            ));
        }
        let w = self.words();
        let r = start * w..(start + count) * w;
        Ok(BShare::new_unchecked(
            self.id,
            count,
            self.len,
            self.mine[r.clone()].to_vec(),
            self.next[r].to_vec(),
        ))
    }

    /// Stack shares of the same length plane-wise.
    pub fn stack(xs: &[&Self]) -> Result<Self> {
        let first = xs
            .first()
            .ok_or_else(|| MpcError::invalid("BShare::stack", "no shares"))?;
        if xs.iter().any(|x| x.len != first.len) {
            return Err(MpcError::invalid("BShare::stack", "lengths differ"));
        }
        let bits = xs.iter().map(|x| x.bits).sum();
        let mine = xs.iter().flat_map(|x| x.mine.iter().copied()).collect();
        let next = xs.iter().flat_map(|x| x.next.iter().copied()).collect();
        Ok(BShare::new_unchecked(first.id, bits, first.len, mine, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_round_trips_and_matches_definition() {
        let vals: Vec<u64> = (0..150u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i << 7))
            .collect();
        let planes = to_planes(&vals, 64);
        for (j, v) in vals.iter().enumerate() {
            for k in 0..64 {
                let bit = (planes[k * 3 + j / 64] >> (j % 64)) & 1;
                assert_eq!(bit, (v >> k) & 1);
            }
        }
        assert_eq!(from_planes(&planes, 64, 150), vals);
        let one = from_planes(&to_planes(&vals, 1), 1, 150);
        assert!(one.iter().zip(&vals).all(|(b, v)| *b == v & 1));
        let low = from_planes(&to_planes(&vals, 10), 10, 150);
        assert!(low.iter().zip(&vals).all(|(a, b)| *a == b & 1023));
    }
}
