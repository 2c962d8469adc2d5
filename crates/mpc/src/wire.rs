//! Message encodings: ring elements as little-endian words, and narrow values (d-bit OT messages
//! and pads) bit-packed. Decoders check the exact length so a truncated or padded frame is an
//! error that names the sender, never a panic.

use crate::error::{MpcError, Result};
use net::PartyId;

pub fn encode_words(words: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(words.len() * 8);
    push_words(&mut out, words);
    out
}

/// Append `words` to `buf` (little-endian; a plain copy on little-endian machines).
pub fn push_words(buf: &mut Vec<u8>, words: &[u64]) {
    if cfg!(target_endian = "little") {
        // SAFETY: reading the initialised bytes of a u64 slice.
        let bytes =
            unsafe { std::slice::from_raw_parts(words.as_ptr() as *const u8, words.len() * 8) };
        buf.extend_from_slice(bytes);
    } else {
        buf.reserve(words.len() * 8);
        for w in words {
            buf.extend_from_slice(&w.to_le_bytes());
        }
    }
}

/// Write `words` as little-endian bytes into `out` (exactly 8 bytes per word).
pub fn push_le(out: &mut [u8], words: &[u64]) {
    assert_eq!(out.len(), 8 * words.len(), "push_le: output size");
    for (o, w) in out.chunks_exact_mut(8).zip(words) {
        o.copy_from_slice(&w.to_le_bytes());
    }
}

/// Word `i` of a little-endian word buffer.
#[inline(always)]
pub fn word_at(bytes: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().expect("8 bytes"))
}

/// Check that a message holds exactly `expected` bytes.
pub fn check_len(
    protocol: &'static str,
    from: PartyId,
    bytes: &[u8],
    expected: usize,
) -> Result<()> {
    if bytes.len() != expected {
        return Err(MpcError::BadMessage {
            protocol,
            from,
            expected,
            got: bytes.len(),
        });
    }
    Ok(())
}

/// Check that a message holds exactly `n` words.
pub fn check_words(protocol: &'static str, from: PartyId, bytes: &[u8], n: usize) -> Result<()> {
    check_len(protocol, from, bytes, n * 8)
}

pub fn decode_words(
    protocol: &'static str,
    from: PartyId,
    bytes: &[u8],
    n: usize,
) -> Result<Vec<u64>> {
    check_words(protocol, from, bytes, n)?;
    let mut out = vec![0u64; n];
    if cfg!(target_endian = "little") {
        crate::prf::as_bytes_mut(&mut out).copy_from_slice(bytes);
    } else {
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
            *o = u64::from_le_bytes(c.try_into().expect("8-byte chunk"));
        }
    }
    Ok(out)
}

/// Bytes that `n` values of `width` bits occupy when packed.
pub fn packed_len(n: usize, width: u32) -> usize {
    (n * width as usize).div_ceil(8)
}

/// Pack the low `width` bits of each value, LSB first, densely (appended to `buf`).
pub fn pack_bits(buf: &mut Vec<u8>, vals: &[u64], width: u32) {
    if width == 64 {
        return push_words(buf, vals);
    }
    let start = buf.len();
    buf.resize(start + packed_len(vals.len(), width), 0);
    pack_into(&mut buf[start..], vals, width);
}

/// The mask of the low `width` bits (1..=64): every packed field is cut with it.
fn low_mask(width: u32) -> u64 {
    assert!((1..=64).contains(&width));
    u64::MAX >> (64 - width)
}

/// Pack the low `width` bits of each of `vals` into `out`, which holds exactly
/// `packed_len(vals.len(), width)` bytes (the layout of [`pack_bits`]; a fused pass packs each
/// chunk into its own slice of the outgoing frame).
pub fn pack_into(out: &mut [u8], vals: &[u64], width: u32) {
    assert_eq!(
        out.len(),
        packed_len(vals.len(), width),
        "pack_into: output size"
    );
    let mask = low_mask(width);
    let (mut acc, mut fill, mut pos) = (0u64, 0u32, 0usize);
    for &v in vals {
        let v = v & mask;
        acc |= v << fill;
        fill += width;
        if fill >= 64 {
            out[pos..pos + 8].copy_from_slice(&acc.to_le_bytes());
            pos += 8;
            fill -= 64;
            acc = if fill == 0 { 0 } else { v >> (width - fill) };
        }
    }
    let tail = out.len() - pos;
    out[pos..].copy_from_slice(&acc.to_le_bytes()[..tail]);
}

/// Reads consecutive `width`-bit fields from a word slice (LSB first): the narrow values a
/// protocol cuts from one PRF draw of `ceil(count * width / 64)` words.
pub struct WordBits<'a> {
    words: &'a [u64],
    width: u32,
    mask: u64,
    next: usize,
    cur: u64,
    used: u32,
}

impl<'a> WordBits<'a> {
    pub fn new(words: &'a [u64], width: u32) -> Self {
        WordBits {
            words,
            width,
            mask: low_mask(width),
            next: 1,
            cur: words.first().copied().unwrap_or(0),
            used: 0,
        }
    }

    /// Words needed for `count` fields of `width` bits.
    pub fn words_for(count: usize, width: u32) -> usize {
        (count * width as usize).div_ceil(64)
    }

    #[inline(always)]
    pub fn read(&mut self) -> u64 {
        let mut v = self.cur >> self.used;
        let avail = 64 - self.used;
        if self.width >= avail {
            self.cur = self.words.get(self.next).copied().unwrap_or(0);
            self.next += 1;
            if self.width > avail {
                v |= self.cur << avail;
            }
            self.used = self.width - avail;
        } else {
            self.used += self.width;
        }
        v & self.mask
    }
}

/// Reads `width`-bit values packed by [`pack_bits`], in order, from any bit offset. The caller
/// has checked the buffer's length; reads past its end yield zero bits.
pub struct BitReader<'a> {
    bytes: &'a [u8],
    width: u32,
    mask: u64,
    word: usize,
    cur: u64,
    used: u32,
}

impl<'a> BitReader<'a> {
    pub fn new(bytes: &'a [u8], width: u32, start_bit: usize) -> Self {
        let mut r = BitReader {
            bytes,
            width,
            mask: low_mask(width),
            word: start_bit / 64,
            cur: 0,
            used: (start_bit % 64) as u32,
        };
        r.cur = r.load(r.word);
        r
    }

    fn load(&self, i: usize) -> u64 {
        if 8 * i + 8 <= self.bytes.len() {
            word_at(self.bytes, i)
        } else {
            let mut b = [0u8; 8];
            let tail = &self.bytes[(8 * i).min(self.bytes.len())..];
            b[..tail.len()].copy_from_slice(tail);
            u64::from_le_bytes(b)
        }
    }

    #[inline]
    pub fn read(&mut self) -> u64 {
        let mut v = self.cur >> self.used;
        let avail = 64 - self.used;
        if self.width >= avail {
            self.word += 1;
            self.cur = self.load(self.word);
            if self.width > avail {
                v |= self.cur << avail;
            }
            self.used = self.width - avail;
        } else {
            self.used += self.width;
        }
        v & self.mask
    }
}

pub fn unpack_bits(
    protocol: &'static str,
    from: PartyId,
    bytes: &[u8],
    n: usize,
    width: u32,
) -> Result<Vec<u64>> {
    check_len(protocol, from, bytes, packed_len(n, width))?;
    if width == 64 {
        return decode_words(protocol, from, bytes, n);
    }
    let mut r = BitReader::new(bytes, width, 0);
    Ok((0..n).map(|_| r.read()).collect())
}

/// Split a received frame into pieces of the given lengths, checking the total.
pub fn split_frame<'a>(
    protocol: &'static str,
    from: PartyId,
    bytes: &'a [u8],
    lens: &[usize],
) -> Result<Vec<&'a [u8]>> {
    check_len(protocol, from, bytes, lens.iter().sum())?;
    let mut out = Vec::with_capacity(lens.len());
    let mut off = 0;
    for &l in lens {
        out.push(&bytes[off..off + l]);
        off += l;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_packing_round_trips() {
        for width in [1u32, 5, 18, 31, 63, 64] {
            let vals: Vec<u64> = (0..37u64)
                .map(|i| i.wrapping_mul(0x9E3779B97F4A7C15))
                .collect();
            let mut buf = Vec::new();
            pack_bits(&mut buf, &vals, width);
            assert_eq!(buf.len(), packed_len(37, width));
            let back = unpack_bits("t", 1, &buf, 37, width).unwrap();
            let mask = if width == 64 {
                u64::MAX
            } else {
                (1 << width) - 1
            };
            assert!(vals.iter().zip(&back).all(|(a, b)| a & mask == *b));
        }
        assert!(unpack_bits("t", 2, &[0u8; 3], 37, 5).is_err());
        for width in [1u32, 7, 18, 28, 63, 64] {
            let vals: Vec<u64> = (0..101u64)
                .map(|i| i.wrapping_mul(0x9E3779B97F4A7C15) ^ (i << 7))
                .collect();
            // The layout, bit by bit: value i's bit b is bit i * width + b of the stream.
            let mut want = vec![0u8; packed_len(vals.len(), width)];
            for (i, v) in vals.iter().enumerate() {
                for b in 0..width as usize {
                    let at = i * width as usize + b;
                    want[at / 8] |= (((v >> b) & 1) as u8) << (at % 8);
                }
            }
            let mut packed = Vec::new();
            pack_bits(&mut packed, &vals, width);
            assert_eq!(packed, want, "width {width}");
            let mut into = vec![0u8; want.len()];
            pack_into(&mut into, &vals, width);
            assert_eq!(into, want, "width {width}");
            let words: Vec<u64> = want
                .chunks(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b[..c.len()].copy_from_slice(c);
                    u64::from_le_bytes(b)
                })
                .collect();
            let mut r = WordBits::new(&words, width);
            let mask = if width == 64 {
                u64::MAX
            } else {
                (1 << width) - 1
            };
            assert!(vals.iter().all(|v| r.read() == v & mask), "width {width}");
        }
        assert!(decode_words("t", 2, &[0u8; 15], 2).is_err());
    }
}
