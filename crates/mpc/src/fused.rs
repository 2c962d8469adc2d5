//! Fused passes over long share vectors: the hot protocols (product re-sharing, truncation) do
//! all their per-element work (PRF draws, arithmetic, packing into the outgoing frame) in one
//! pass, a chunk of [`CHUNK`] elements at a time, so that a chunk's PRF words and packed fields
//! stay in cache and no full-length temporary is ever allocated (on this machine a fresh 8 MB
//! buffer costs ~4 ms of page faults, as much as the arithmetic). Long passes split their chunks
//! over the cores.
//!
//! A pass writes to several outputs of different granularity (words, the bytes of words, d-bit
//! packed fields); each is a [`Cut`] that knows how many of its items an element takes, so the
//! driver can split all of them at the same element boundary. Chunk boundaries are multiples of
//! 64 elements, so the packed fields of a chunk start on a word boundary of any d-bit stream.

/// Elements per chunk (a multiple of 64).
pub(crate) const CHUNK: usize = 4096;
/// Passes over at least this many elements run their chunks on all cores.
pub(crate) const PAR_MIN: usize = 1 << 15;

/// A mutable output of a pass: element e starts at item `e * num / den` of `data`.
pub(crate) struct Cut<'a, T> {
    pub data: &'a mut [T],
    num: usize,
    den: usize,
}

impl<'a, T: Send> Cut<'a, T> {
    /// One item per element.
    pub fn words(data: &'a mut [T]) -> Self {
        Cut {
            data,
            num: 1,
            den: 1,
        }
    }
}

impl<'a> Cut<'a, u8> {
    /// The little-endian bytes of one word per element.
    pub fn word_bytes(data: &'a mut [u8]) -> Self {
        Cut {
            data,
            num: 8,
            den: 1,
        }
    }
    /// `width` bits per element, packed (see `wire::pack_bits`).
    pub fn packed(data: &'a mut [u8], width: u32) -> Self {
        Cut {
            data,
            num: width as usize,
            den: 8,
        }
    }
}

/// Outputs that can be cut at an element boundary (a multiple of 64 elements).
pub(crate) trait Parts: Send + Sized {
    fn split_at(self, elem: usize) -> (Self, Self);
}

impl<T: Send> Parts for Cut<'_, T> {
    fn split_at(self, elem: usize) -> (Self, Self) {
        let (num, den) = (self.num, self.den);
        let at = (elem * num / den).min(self.data.len());
        let (a, b) = self.data.split_at_mut(at);
        (Cut { data: a, num, den }, Cut { data: b, num, den })
    }
}

macro_rules! tuple_parts {
    ($($p:ident $i:tt),+) => {
        impl<$($p: Parts),+> Parts for ($($p,)+) {
            fn split_at(self, elem: usize) -> (Self, Self) {
                let halves = ($(self.$i.split_at(elem),)+);
                (($(halves.$i.0,)+), ($(halves.$i.1,)+))
            }
        }
    };
}
tuple_parts!(A 0);
tuple_parts!(A 0, B 1);
tuple_parts!(A 0, B 1, C 2);
tuple_parts!(A 0, B 1, C 2, D 3);
tuple_parts!(A 0, B 1, C 2, D 3, E 4);

/// Runs `body(start, len, parts)` over elements `0..n`, one chunk of at most [`CHUNK`] elements
/// per call (`start` is a multiple of [`CHUNK`]; `parts` holds just that chunk's items), on all
/// cores when `n >= PAR_MIN`.
pub(crate) fn run<P: Parts>(n: usize, parts: P, body: &(impl Fn(usize, usize, P) + Sync)) {
    if n > 0 {
        split(0, n, parts, n >= PAR_MIN, body)
    }
}

/// A new vector of `n` words: elements `start..start + len` are the items of `body(start,
/// len)`, chunk by chunk as in [`run`]. Nothing is zero-filled first (an 8 MB fill costs about as
/// much as the arithmetic that then overwrites it).
///
/// Panics if a body yields fewer than `len` items (extra ones are ignored).
pub(crate) fn collect_words<I: Iterator<Item = u64>>(
    n: usize,
    body: &(impl Fn(usize, usize) -> I + Sync),
) -> Vec<u64> {
    let mut v: Vec<u64> = Vec::with_capacity(n);
    run(
        n,
        Cut::words(&mut v.spare_capacity_mut()[..n]),
        &|start, len, c| {
            let mut written = 0;
            for (o, x) in c.data.iter_mut().zip(body(start, len)) {
                o.write(x);
                written += 1;
            }
            assert_eq!(written, len, "collect_words: a chunk's body ended early");
        },
    );
    // SAFETY: `run` hands each of the elements 0..n to exactly one body call (tested below), and
    // every element of a call's chunk was written (asserted above).
    unsafe { v.set_len(n) };
    v
}

fn split<P: Parts>(
    start: usize,
    len: usize,
    parts: P,
    parallel: bool,
    body: &(impl Fn(usize, usize, P) + Sync),
) {
    if len <= CHUNK {
        return body(start, len, parts);
    }
    let mid = (len / 2).next_multiple_of(CHUNK);
    let (left, right) = parts.split_at(mid);
    if parallel {
        rayon::join(
            || split(start, mid, left, true, body),
            || split(start + mid, len - mid, right, true, body),
        );
    } else {
        split(start, mid, left, false, body);
        split(start + mid, len - mid, right, false, body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn chunks_cover_every_element_once_at_aligned_offsets() {
        for n in [
            0,
            1,
            63,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK + 17,
            PAR_MIN + 5 * CHUNK + 3,
        ] {
            let mut words = vec![0u64; n];
            let mut bytes = vec![0u8; 8 * n];
            let mut packed = vec![0u8; crate::wire::packed_len(n, 18)];
            let calls = AtomicUsize::new(0);
            let parts = (
                Cut::words(&mut words[..]),
                Cut::word_bytes(&mut bytes[..]),
                Cut::packed(&mut packed[..], 18),
            );
            run(n, parts, &|start, len, (w, b, p)| {
                assert!(start % CHUNK == 0 && len <= CHUNK && len > 0);
                assert_eq!(w.data.len(), len);
                assert_eq!(b.data.len(), 8 * len);
                assert_eq!(p.data.len(), crate::wire::packed_len(len, 18));
                for (i, x) in w.data.iter_mut().enumerate() {
                    *x += (start + i) as u64 + 1;
                }
                calls.fetch_add(1, Ordering::Relaxed);
            });
            assert!(words.iter().enumerate().all(|(i, &x)| x == i as u64 + 1));
            assert_eq!(calls.load(Ordering::Relaxed), n.div_ceil(CHUNK));
            let squares = collect_words(n, &|start, len| {
                (start..start + len).map(|i| (i * i) as u64)
            });
            assert!(squares
                .iter()
                .enumerate()
                .all(|(i, &x)| x == (i * i) as u64));
        }
    }
}
