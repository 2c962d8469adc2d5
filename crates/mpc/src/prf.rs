//! AES-128 in counter mode as a PRF: the source of all correlated randomness.
//!
//! Two parties that hold the same key draw the same stream, so zero-shares, masks and random
//! share components cost no communication. Every draw is addressed by (nonce, purpose): the nonce
//! is the protocol invocation's number (all parties run the same protocols in the same order), the
//! purpose tells apart the draws of one invocation. So a party that skips a draw (because its role
//! does not need it) never desynchronises the stream of another. The `aes` crate detects AES-NI at
//! run time.

use aes::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use rayon::prelude::*;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// Draws of at least this many words are split across the cores.
const PARALLEL_WORDS: usize = 1 << 16;

/// A PRF key (128 bits).
#[derive(Clone)]
pub struct Prf {
    key: [u8; 16],
}

impl std::fmt::Debug for Prf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prf(..)")
    }
}

impl Prf {
    pub fn new(key: [u8; 16]) -> Self {
        Prf { key }
    }

    fn iv(nonce: u64, purpose: u32) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&nonce.to_be_bytes());
        iv[8..12].copy_from_slice(&purpose.to_be_bytes());
        iv
    }

    /// Fill `out` with pseudorandom words for (nonce, purpose).
    pub fn fill(&self, nonce: u64, purpose: u32, out: &mut [u64]) {
        let iv = Self::iv(nonce, purpose);
        let run = |chunk: &mut [u64], word_off: usize| {
            chunk.fill(0);
            let mut c = Aes128Ctr::new(&self.key.into(), &iv.into());
            c.seek((word_off * 8) as u64);
            let bytes: &mut [u8] = unsafe {
                // SAFETY: u64 has no invalid bit patterns and u8 has alignment 1.
                std::slice::from_raw_parts_mut(chunk.as_mut_ptr() as *mut u8, chunk.len() * 8)
            };
            c.apply_keystream(bytes);
            if cfg!(target_endian = "big") {
                for w in chunk.iter_mut() {
                    *w = u64::from_le(*w);
                }
            }
        };
        if out.len() < PARALLEL_WORDS {
            run(out, 0);
        } else {
            out.par_chunks_mut(PARALLEL_WORDS / 4)
                .enumerate()
                .for_each(|(i, c)| run(c, i * (PARALLEL_WORDS / 4)));
        }
    }

    /// `n` pseudorandom words for (nonce, purpose).
    pub fn words(&self, nonce: u64, purpose: u32, n: usize) -> Vec<u64> {
        let mut v = vec![0u64; n];
        self.fill(nonce, purpose, &mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_addressed_and_split_consistently() {
        let p = Prf::new([7; 16]);
        let big = p.words(3, 1, PARALLEL_WORDS * 2 + 5);
        let mut small = vec![0u64; 100];
        Prf::new([7; 16]).fill(3, 1, &mut small);
        assert_eq!(&big[..100], &small[..]);
        assert_ne!(p.words(3, 2, 4), p.words(3, 1, 4));
        assert_ne!(p.words(4, 1, 4), p.words(3, 1, 4));
        assert_ne!(Prf::new([8; 16]).words(3, 1, 4), p.words(3, 1, 4));
        // The parallel split must give the same stream as one sequential pass.
        let mut seq = vec![0u64; PARALLEL_WORDS * 2 + 5];
        let mut c = Aes128Ctr::new(&[7u8; 16].into(), &Prf::iv(3, 1).into());
        let bytes: &mut [u8] =
            unsafe { std::slice::from_raw_parts_mut(seq.as_mut_ptr() as *mut u8, seq.len() * 8) };
        c.apply_keystream(bytes);
        assert_eq!(seq, big);
    }
}
