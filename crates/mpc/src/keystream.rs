//! AES-128-CTR keystream applied straight into word slices: the engine of [`crate::prf::Prf`].
//!
//! The PRF draws are a large share of a product's CPU (a 1M robust product draws 20-30 MB of
//! keystream per party), and the `aes` crate's CTR mode encrypts one 128-bit block per AES-NI
//! instruction and can only XOR into a buffer, which then has to be zeroed first and added in a
//! second pass. On CPUs with VAES and AVX-512 (checked at run time) this module encrypts four
//! blocks per instruction, eight registers at a time, and sets, adds, subtracts or XORs the
//! keystream into the destination words as it goes. Elsewhere it falls back to the `aes` crate
//! through a small stack buffer. Both paths give the same stream as `ctr::Ctr128BE<Aes128>`:
//! block j of a stream is AES_k(iv + j), the 128-bit counter big-endian, and word w is bytes
//! 8w..8w+8 of the keystream read little-endian (tests compare them).

use std::mem::MaybeUninit;

use aes::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};

use crate::fused::as_uninit;

type CrateCtr = ctr::Ctr128BE<aes::Aes128>;

/// What to do with each keystream word k and destination word o.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Apply {
    /// o = k
    Set,
    /// o = o + k (wrapping)
    Add,
    /// o = o - k (wrapping)
    Sub,
    /// o = o ^ k
    Xor,
}

impl Apply {
    #[cfg(test)]
    fn word(self, o: &mut u64, k: u64) {
        let mut slot = MaybeUninit::new(*o);
        // SAFETY: `slot` is initialised, and stays so.
        *o = unsafe {
            self.word_uninit(&mut slot, k);
            slot.assume_init()
        };
    }

    /// [`Apply::word`] on a word that `Set` may find uninitialised.
    ///
    /// # Safety
    /// `o` is initialised unless `self` is `Set`.
    #[inline]
    unsafe fn word_uninit(self, o: &mut MaybeUninit<u64>, k: u64) {
        let old = || unsafe { o.assume_init_read() };
        let v = match self {
            Apply::Set => k,
            Apply::Add => old().wrapping_add(k),
            Apply::Sub => old().wrapping_sub(k),
            Apply::Xor => old() ^ k,
        };
        o.write(v);
    }
}

/// An AES-128 key ready for counter mode.
#[derive(Clone)]
pub(crate) struct Keystream {
    key: [u8; 16],
    /// The expanded round keys when the vector path is available on this CPU.
    #[cfg(target_arch = "x86_64")]
    vaes: Option<[[u8; 16]; 11]>,
}

impl Keystream {
    pub fn new(key: [u8; 16]) -> Self {
        Keystream {
            key,
            #[cfg(target_arch = "x86_64")]
            vaes: x86::available().then(|| {
                // SAFETY: `available` checked the AES-NI feature the expansion uses.
                unsafe { x86::expand_key(&key) }
            }),
        }
    }

    /// Applies words `word_off..word_off + out.len()` of the stream with counter block `iv` to
    /// `out` by `op`.
    pub fn apply(&self, iv: &[u8; 16], word_off: usize, out: &mut [u64], op: Apply) {
        // SAFETY: every word of `out` is initialised.
        unsafe { self.apply_uninit(iv, word_off, as_uninit(out), op) }
    }

    /// Writes words `word_off..word_off + out.len()` of the stream into `out`, which need not
    /// be initialised: a fresh vector gets its PRF words as the AES makes them, where drawing
    /// them into a buffer and copying it stalled on the stores into memory not yet in cache.
    pub fn fill_uninit(&self, iv: &[u8; 16], word_off: usize, out: &mut [MaybeUninit<u64>]) {
        // SAFETY: `Set` reads nothing.
        unsafe { self.apply_uninit(iv, word_off, out, Apply::Set) }
    }

    /// # Safety
    /// `out` is initialised unless `op` is `Set`.
    unsafe fn apply_uninit(
        &self,
        iv: &[u8; 16],
        word_off: usize,
        out: &mut [MaybeUninit<u64>],
        op: Apply,
    ) {
        #[cfg(target_arch = "x86_64")]
        if let Some(rk) = &self.vaes {
            // The vector path steps only the counter's low 32 bits; a stream that long (32 GiB)
            // is never drawn, but take the general path rather than wrap wrongly.
            let low = u32::from_be_bytes([iv[12], iv[13], iv[14], iv[15]]) as u64;
            let last_block = (word_off + out.len()) as u64 / 2 + 1;
            if low + last_block < 1 << 32 {
                // SAFETY: the round keys exist only when `x86::available()` held; `out` is as
                // the caller promised.
                unsafe { x86::apply(rk, iv, word_off, out, op) };
                return;
            }
        }
        // SAFETY: the caller's promise.
        unsafe { self.apply_generic(iv, word_off, out, op) }
    }

    /// # Safety
    /// As [`Keystream::apply_uninit`].
    unsafe fn apply_generic(
        &self,
        iv: &[u8; 16],
        word_off: usize,
        out: &mut [MaybeUninit<u64>],
        op: Apply,
    ) {
        let mut c = CrateCtr::new(&self.key.into(), iv.into());
        c.seek((word_off * 8) as u64);
        let mut buf = [0u64; 256];
        for part in out.chunks_mut(buf.len()) {
            let ks = &mut buf[..part.len()];
            ks.fill(0);
            c.apply_keystream(crate::prf::as_bytes_mut(ks));
            for (o, k) in part.iter_mut().zip(ks.iter()) {
                // SAFETY: the caller's promise.
                unsafe { op.word_uninit(o, u64::from_le(*k)) };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Apply;
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Words per step of the main loop: 8 registers of 4 blocks.
    const STEP: usize = 64;

    pub fn available() -> bool {
        std::is_x86_feature_detected!("aes")
            && std::is_x86_feature_detected!("vaes")
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
    }

    /// The AES-128 key schedule (FIPS-197), with AES-NI's key-generation assist.
    #[target_feature(enable = "aes,sse2")]
    pub unsafe fn expand_key(key: &[u8; 16]) -> [[u8; 16]; 11] {
        #[inline(always)]
        unsafe fn step(k: __m128i, assist: __m128i) -> __m128i {
            let assist = _mm_shuffle_epi32::<0xff>(assist);
            let mut k = k;
            k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
            k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
            k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
            _mm_xor_si128(k, assist)
        }
        let mut rk = [_mm_setzero_si128(); 11];
        rk[0] = _mm_loadu_si128(key.as_ptr() as *const __m128i);
        macro_rules! round {
            ($i:expr, $rcon:expr) => {
                rk[$i] = step(rk[$i - 1], _mm_aeskeygenassist_si128::<$rcon>(rk[$i - 1]));
            };
        }
        round!(1, 0x01);
        round!(2, 0x02);
        round!(3, 0x04);
        round!(4, 0x08);
        round!(5, 0x10);
        round!(6, 0x20);
        round!(7, 0x40);
        round!(8, 0x80);
        round!(9, 0x1b);
        round!(10, 0x36);
        let mut out = [[0u8; 16]; 11];
        for (o, k) in out.iter_mut().zip(rk.iter()) {
            _mm_storeu_si128(o.as_mut_ptr() as *mut __m128i, *k);
        }
        out
    }

    /// Blocks `first + 4 i + lane` of the stream for the 8 registers i, from the counter block
    /// with low 32 bits zero (`base`) and the little-endian block numbers (`counters`, dword 3 of
    /// each lane), byte-swapped into place.
    #[target_feature(enable = "avx512f,avx512bw,vaes")]
    unsafe fn encrypt8(rk: &[__m512i; 11], base: __m512i, counters: __m512i) -> [__m512i; 8] {
        // Reverses bytes 12..16 of each 128-bit lane, keeps the rest.
        let swap = _mm512_broadcast_i32x4(_mm_setr_epi8(
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 15, 14, 13, 12,
        ));
        let four = _mm512_broadcast_i32x4(_mm_setr_epi32(0, 0, 0, 4));
        let mut x = [_mm512_setzero_si512(); 8];
        let mut c = counters;
        for xi in x.iter_mut() {
            *xi = _mm512_xor_si512(_mm512_or_si512(base, _mm512_shuffle_epi8(c, swap)), rk[0]);
            c = _mm512_add_epi32(c, four);
        }
        for k in &rk[1..10] {
            for xi in x.iter_mut() {
                *xi = _mm512_aesenc_epi128(*xi, *k);
            }
        }
        for xi in x.iter_mut() {
            *xi = _mm512_aesenclast_epi128(*xi, rk[10]);
        }
        x
    }

    /// The keystream of `STEP` words starting at block `block` into `ks`.
    #[target_feature(enable = "avx512f,avx512bw,vaes")]
    unsafe fn step_into(rk: &[__m512i; 11], base: __m512i, block: u32, ks: &mut [u64; STEP]) {
        let x = encrypt8(rk, base, lane_counters(block));
        for (i, xi) in x.iter().enumerate() {
            _mm512_storeu_si512(ks.as_mut_ptr().add(8 * i) as *mut __m512i, *xi);
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn lane_counters(block: u32) -> __m512i {
        let b = block as i32;
        _mm512_setr_epi32(
            0,
            0,
            0,
            b,
            0,
            0,
            0,
            b.wrapping_add(1),
            0,
            0,
            0,
            b.wrapping_add(2),
            0,
            0,
            0,
            b.wrapping_add(3),
        )
    }

    /// [`super::Keystream::apply_uninit`] on this CPU. The caller guarantees that the
    /// counter's low 32 bits do not wrap over the range, and that `out` is initialised unless
    /// `op` is `Set`.
    #[target_feature(enable = "avx512f,avx512bw,vaes,aes")]
    pub unsafe fn apply(
        rk: &[[u8; 16]; 11],
        iv: &[u8; 16],
        word_off: usize,
        out: &mut [MaybeUninit<u64>],
        op: Apply,
    ) {
        if out.is_empty() {
            return;
        }
        let rk: [__m512i; 11] = std::array::from_fn(|i| {
            _mm512_broadcast_i32x4(_mm_loadu_si128(rk[i].as_ptr() as *const __m128i))
        });
        let mut base_bytes = *iv;
        let low = u32::from_be_bytes([iv[12], iv[13], iv[14], iv[15]]);
        base_bytes[12..].fill(0);
        let base = _mm512_broadcast_i32x4(_mm_loadu_si128(base_bytes.as_ptr() as *const __m128i));
        let block_of = |w: usize| low.wrapping_add((w / 2) as u32);

        // An odd start is the second word of a block.
        let mut w = word_off;
        let mut rest = out;
        if w % 2 == 1 {
            let mut ks = [0u64; STEP];
            step_into(&rk, base, block_of(w), &mut ks);
            op.word_uninit(&mut rest[0], ks[1]);
            rest = &mut rest[1..];
            w += 1;
        }
        let whole = rest.len() / STEP * STEP;
        let (body, tail) = rest.split_at_mut(whole);
        let thirty_two = _mm512_broadcast_i32x4(_mm_setr_epi32(0, 0, 0, 32));
        let mut counters = lane_counters(block_of(w));
        for words in body.chunks_exact_mut(STEP) {
            let x = encrypt8(&rk, base, counters);
            counters = _mm512_add_epi32(counters, thirty_two);
            let p = words.as_mut_ptr() as *mut __m512i;
            for (i, k) in x.iter().enumerate() {
                let dst = p.add(i);
                let v = match op {
                    Apply::Set => *k,
                    Apply::Add => _mm512_add_epi64(_mm512_loadu_si512(dst as *const _), *k),
                    Apply::Sub => _mm512_sub_epi64(_mm512_loadu_si512(dst as *const _), *k),
                    Apply::Xor => _mm512_xor_si512(_mm512_loadu_si512(dst as *const _), *k),
                };
                _mm512_storeu_si512(dst, v);
            }
        }
        if !tail.is_empty() {
            let mut ks = [0u64; STEP];
            step_into(&rk, base, block_of(w + whole), &mut ks);
            for (o, k) in tail.iter_mut().zip(ks.iter()) {
                op.word_uninit(o, *k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(key: [u8; 16], iv: &[u8; 16], word_off: usize, n: usize) -> Vec<u64> {
        let mut c = CrateCtr::new(&key.into(), iv.into());
        c.seek((word_off * 8) as u64);
        let mut v = vec![0u64; n];
        c.apply_keystream(crate::prf::as_bytes_mut(&mut v));
        v.iter().map(|w| u64::from_le(*w)).collect()
    }

    #[test]
    fn every_path_gives_the_ctr128be_stream() {
        let key = [0x3c, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xf1];
        let ks = Keystream::new(key);
        // A counter block whose low 32 bits start near (but not at) a carry.
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        iv[8..12].copy_from_slice(&9u32.to_be_bytes());
        for low in [0u32, 0x00ff_fff0, 0xffff_ff00] {
            iv[12..].copy_from_slice(&low.to_be_bytes());
            for off in [0usize, 1, 2, 63, 64, 77, 1000] {
                for n in [0usize, 1, 2, 3, 63, 64, 65, 127, 129, 1000] {
                    let want = reference(key, &iv, off, n);
                    for op in [Apply::Set, Apply::Add, Apply::Sub, Apply::Xor] {
                        let start: Vec<u64> = (0..n as u64)
                            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                            .collect();
                        let mut got = start.clone();
                        ks.apply(&iv, off, &mut got, op);
                        let mut generic = start.clone();
                        // SAFETY: `generic` is initialised.
                        unsafe { ks.apply_generic(&iv, off, as_uninit(&mut generic), op) };
                        let mut expect = start.clone();
                        for (e, k) in expect.iter_mut().zip(&want) {
                            op.word(e, *k);
                        }
                        assert_eq!(got, expect, "op {op:?}, low {low:#x}, offset {off}, n {n}");
                        assert_eq!(generic, expect, "generic: op {op:?}, offset {off}, n {n}");
                    }
                }
            }
        }
    }
}
