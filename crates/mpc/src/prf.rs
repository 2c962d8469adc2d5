//! AES-128 in counter mode as a PRF: the source of all correlated randomness.
//!
//! Two parties that hold the same key draw the same stream, so zero-shares, masks and random
//! share components cost no communication. Every draw is addressed by (nonce, purpose): the nonce
//! is the protocol invocation's number (all parties run the same protocols in the same order), the
//! purpose tells apart the draws of one invocation. So a party that skips a draw (because its role
//! does not need it) never desynchronises the stream of another. The `aes` crate detects AES-NI at
//! run time; [`crate::keystream`] applies the stream (with VAES where the CPU has it).

use crate::fused::{self, Cut};
use crate::keystream::{Apply, Keystream};

/// A PRF key (128 bits).
#[derive(Clone)]
pub struct Prf {
    stream: Keystream,
}

impl std::fmt::Debug for Prf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prf(..)")
    }
}

impl Prf {
    pub fn new(key: [u8; 16]) -> Self {
        Prf {
            stream: Keystream::new(key),
        }
    }

    fn iv(nonce: u64, purpose: u32) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&nonce.to_be_bytes());
        iv[8..12].copy_from_slice(&purpose.to_be_bytes());
        iv
    }

    /// Apply the words of (nonce, purpose) to `out` by `op`, on all cores for long outputs.
    fn apply_chunked(&self, nonce: u64, purpose: u32, out: &mut [u64], op: Apply) {
        let iv = Self::iv(nonce, purpose);
        fused::run(out.len(), Cut::words(out), &|start, _, c| {
            self.stream.apply(&iv, start, c.data, op)
        });
    }

    /// XOR the pseudorandom words of (nonce, purpose) into `out` (no allocation).
    pub fn xor_into(&self, nonce: u64, purpose: u32, out: &mut [u64]) {
        self.apply_chunked(nonce, purpose, out, Apply::Xor);
    }

    /// [`Prf::fill_at`] into words not yet written (a fresh vector's chunk).
    pub fn fill_uninit_at(
        &self,
        nonce: u64,
        purpose: u32,
        word_off: usize,
        out: &mut [std::mem::MaybeUninit<u64>],
    ) {
        self.stream
            .fill_uninit(&Self::iv(nonce, purpose), word_off, out);
    }

    /// Add (or subtract, if `negate`) the pseudorandom words of (nonce, purpose) to `out`,
    /// wrapping.
    pub fn add_into(&self, nonce: u64, purpose: u32, out: &mut [u64], negate: bool) {
        let op = if negate { Apply::Sub } else { Apply::Add };
        self.apply_chunked(nonce, purpose, out, op);
    }

    /// Words `word_off..word_off + out.len()` of the stream of (nonce, purpose), into `out`:
    /// the same words as that range of [`Prf::words`] (fused passes draw a chunk at a time).
    pub fn fill_at(&self, nonce: u64, purpose: u32, word_off: usize, out: &mut [u64]) {
        self.stream
            .apply(&Self::iv(nonce, purpose), word_off, out, Apply::Set);
    }

    /// Add (or subtract, if `negate`) words `word_off..word_off + out.len()` of the stream of
    /// (nonce, purpose) to `out`, wrapping.
    pub fn add_at(&self, nonce: u64, purpose: u32, word_off: usize, out: &mut [u64], negate: bool) {
        let op = if negate { Apply::Sub } else { Apply::Add };
        self.stream
            .apply(&Self::iv(nonce, purpose), word_off, out, op);
    }

    /// Fill `out` with pseudorandom words for (nonce, purpose).
    pub fn fill(&self, nonce: u64, purpose: u32, out: &mut [u64]) {
        self.apply_chunked(nonce, purpose, out, Apply::Set);
    }

    /// `n` pseudorandom words for (nonce, purpose), drawn a chunk at a time on all cores
    /// straight into the new vector (no zero fill of the whole vector first, no copy).
    pub fn words(&self, nonce: u64, purpose: u32, n: usize) -> Vec<u64> {
        let mut v = fused::Fresh::new(n);
        fused::run(n, v.cut(), &|start, _, c| {
            c.init_prf(self, nonce, purpose, start);
        });
        v.into_vec()
    }
}

/// The bytes of a word slice (native order).
pub(crate) fn as_bytes_mut(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: u64 has no padding or invalid bit patterns; u8 has alignment 1; the length covers
    // exactly the same memory.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, words.len() * 8) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::PAR_MIN;

    #[test]
    fn streams_are_addressed_and_split_consistently() {
        let p = Prf::new([7; 16]);
        let big = p.words(3, 1, PAR_MIN * 2 + 5);
        let mut small = vec![0u64; 100];
        Prf::new([7; 16]).fill(3, 1, &mut small);
        assert_eq!(&big[..100], &small[..]);
        assert_ne!(p.words(3, 2, 4), p.words(3, 1, 4));
        assert_ne!(p.words(4, 1, 4), p.words(3, 1, 4));
        assert_ne!(Prf::new([8; 16]).words(3, 1, 4), p.words(3, 1, 4));
        // The parallel split must give the same stream as one sequential pass.
        let mut seq = vec![0u64; PAR_MIN * 2 + 5];
        use aes::cipher::{KeyIvInit, StreamCipher};
        let mut c = ctr::Ctr128BE::<aes::Aes128>::new(&[7u8; 16].into(), &Prf::iv(3, 1).into());
        let bytes: &mut [u8] =
            unsafe { std::slice::from_raw_parts_mut(seq.as_mut_ptr() as *mut u8, seq.len() * 8) };
        c.apply_keystream(bytes);
        assert_eq!(seq, big);
        // Chunked draws at word offsets (odd ones start mid-block) agree with one draw.
        let mut part = vec![0u64; 1001];
        p.fill_at(3, 1, 77, &mut part);
        assert_eq!(&part[..], &big[77..1078]);
        let mut sum = vec![5u64; 1001];
        p.add_at(3, 1, 77, &mut sum, false);
        assert!(sum
            .iter()
            .zip(&big[77..])
            .all(|(s, b)| *s == b.wrapping_add(5)));
        p.add_at(3, 1, 77, &mut sum, true);
        assert!(sum.iter().all(|&s| s == 5));
    }
}
