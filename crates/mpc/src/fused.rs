//! Fused passes over long share vectors: the hot protocols (product re-sharing, truncation) do
//! all their per-element work (PRF draws, arithmetic, packing into the outgoing frame) in one
//! pass, a chunk of [`CHUNK`] elements at a time, so that a chunk's PRF words and packed fields
//! stay in cache and no full-length temporary is ever allocated (on this machine a fresh 8 MB
//! buffer costs ~4 ms of page faults, as much as the arithmetic). Long passes split their chunks
//! over the cores.
//!
//! A pass writes to several outputs of different granularity (words, the bytes of words, d-bit
//! packed fields); each is a [`Cut`], a [`FreshCut`] (a new vector) or a [`FrameCut`] (a new
//! outgoing message) that knows how many of its items an element takes, so the driver can split
//! all of them at the same element boundary. Chunk boundaries are multiples of
//! 64 elements, so the packed fields of a chunk start on a word boundary of any d-bit stream.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::prf::Prf;

/// Elements per chunk (a multiple of 64 and of `wire::GROUP`).
pub(crate) const CHUNK: usize = 4096;
// A chunk packs its narrow values into its own slice of a frame: a part of a packed stream must
// hold whole groups of the layout (`wire::pack_into`).
const _: () = assert!(CHUNK.is_multiple_of(crate::wire::GROUP));
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

/// An output that only some passes have (cut when present).
impl<P: Parts> Parts for Option<P> {
    fn split_at(self, elem: usize) -> (Self, Self) {
        match self {
            Some(p) => {
                let (a, b) = p.split_at(elem);
                (Some(a), Some(b))
            }
            None => (None, None),
        }
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

thread_local! {
    static SCRATCH: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `words` words of this thread's scratch memory, for a chunk's temporaries (PRF
/// draws, values before packing): a zeroed stack array or vector per chunk cost a 32-64 KB
/// memset each, 6% of a robust product's CPU time. The contents are whatever the thread's last
/// user left (always initialised); `f` must write what it reads. A nested call on the same
/// thread gets a fresh zeroed buffer.
pub(crate) fn with_scratch<R>(words: usize, f: impl FnOnce(&mut [u64]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < words {
                v.resize(words, 0);
            }
            f(&mut v[..words])
        }
        Err(_) => f(&mut vec![0u64; words]),
    })
}

/// Elements per piece of a pipelined protocol's messages (the truncations of `crate::arith`,
/// the multiplexer): small enough that a piece's vectors stay in cache between its passes and
/// that the receiver starts on a message early, large enough that the per-message costs (a
/// frame, two thread wake-ups) stay small. A multiple of 64, so that every piece but the last
/// packs d-bit fields into whole bytes and starts at a word of a bit plane.
pub(crate) const PIECE: usize = 1 << 17;

/// The pieces (first element, length) of an n-element message.
pub(crate) fn pieces(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n.max(1))
        .step_by(PIECE)
        .map(move |first| (first, PIECE.min(n - first)))
}

/// The lengths of [`pieces`], to cut a protocol's vectors with.
pub(crate) fn piece_lens(n: usize) -> Vec<usize> {
    pieces(n).map(|(_, m)| m).collect()
}

/// One item held back by one step, the schedule of a pipeline over pieces: pushing piece j
/// first finishes piece j - 1 (with `f`), so that piece j's message is out before piece j - 1
/// waits for the other party's. `finish` finishes the last.
pub(crate) struct Lag<T>(Option<T>);

impl<T> Lag<T> {
    pub fn new() -> Self {
        Lag(None)
    }

    /// Keeps `item` and runs `f` on the one kept before, if any.
    pub fn push<E>(&mut self, item: T, f: impl FnOnce(T) -> Result<(), E>) -> Result<(), E> {
        match self.0.replace(item) {
            Some(held) => f(held),
            None => Ok(()),
        }
    }

    /// Runs `f` on the item kept last, if any.
    pub fn finish<E>(self, f: impl FnOnce(T) -> Result<(), E>) -> Result<(), E> {
        self.0.map_or(Ok(()), f)
    }
}

/// `n` items of a new vector that passes write before anyone reads them, counted as they are
/// written: the storage of [`Fresh`] (words) and [`Frame`] (bytes).
struct Unwritten<T> {
    v: Vec<T>,
    n: usize,
    written: AtomicUsize,
}

impl<T> Unwritten<T> {
    fn new(n: usize) -> Self {
        Unwritten {
            v: Vec::with_capacity(n),
            n,
            written: AtomicUsize::new(0),
        }
    }

    /// The `n` items, not yet written, and the counter their writers add to.
    fn slots(&mut self) -> (&mut [std::mem::MaybeUninit<T>], &AtomicUsize) {
        (&mut self.v.spare_capacity_mut()[..self.n], &self.written)
    }

    /// The vector, once `n` items were counted written; panics naming `what` otherwise.
    fn finish(mut self, what: &str) -> Vec<T> {
        assert_eq!(
            self.written.load(Ordering::Acquire),
            self.n,
            "{what} was not written whole"
        );
        // SAFETY: the writers (`FreshCut::init`, `FrameCut::put_*`) each own a disjoint part
        // of the slots, write all of it, and only then count it, so a count of n means all n
        // items are written.
        unsafe { self.v.set_len(self.n) };
        self.v
    }
}

/// A new vector of `n` words that a pass writes chunk by chunk, with no zero fill first (an
/// 8 MB fill costs about as much as the arithmetic that then overwrites it). The pass gets each
/// chunk as a [`FreshCut`], which it can initialise only once and only whole; [`Fresh::into_vec`]
/// checks that all `n` words were.
pub(crate) struct Fresh {
    words: Unwritten<u64>,
    /// Whether [`FreshCut::init_streamed`] writes past the caches (a vector of at least
    /// [`STREAM_MIN`] words).
    stream: bool,
}

/// Vectors of at least this many words (2 MB, this machine's L2 cache per core) have their
/// final values streamed to memory ([`stream_le_words`]); smaller ones are written to the
/// cache, where the next protocol finds them. Measured here: writing 8 MB then reading it back
/// took 1.15 + 0.97 ms with ordinary stores and 0.46 + 1.12 streamed, 2 MB 0.26 + 0.14 and
/// 0.11 + 0.25, 1 MB 0.13 + 0.06 and 0.05 + 0.13.
pub(crate) const STREAM_MIN: usize = 1 << 18;

impl Fresh {
    pub fn new(n: usize) -> Self {
        Fresh {
            words: Unwritten::new(n),
            stream: n >= STREAM_MIN,
        }
    }

    pub fn len(&self) -> usize {
        self.words.n
    }

    /// The whole vector as one output of a pass.
    pub fn cut(&mut self) -> FreshCut<'_> {
        let stream = self.stream;
        let (data, written) = self.words.slots();
        FreshCut {
            data,
            written,
            stream,
        }
    }

    /// The vector, once a pass has initialised every chunk. Panics otherwise.
    pub fn into_vec(self) -> Vec<u64> {
        self.words.finish("a fresh vector")
    }
}

impl Fresh {
    /// The vector as consecutive pieces of `lens` elements (summing to its length), for
    /// pipelines that write a piece in one pass and then read and rewrite it in later passes
    /// while later pieces are still unwritten. Each piece is written whole through
    /// [`FreshPiece::cut`] and then taken with [`FreshPiece::into_written`].
    pub fn pieces(&mut self, lens: impl IntoIterator<Item = usize>) -> Vec<FreshPiece<'_>> {
        let stream = self.stream;
        let (mut rest, total) = self.words.slots();
        let mut out = Vec::new();
        for len in lens {
            let (piece, after) = std::mem::take(&mut rest).split_at_mut(len);
            rest = after;
            out.push(FreshPiece {
                data: piece,
                written: AtomicUsize::new(0),
                total,
                stream,
            });
        }
        assert!(rest.is_empty(), "the pieces do not cover the fresh vector");
        out
    }
}

/// A piece of a [`Fresh`] vector with its own count of written elements.
pub(crate) struct FreshPiece<'a> {
    data: &'a mut [MaybeUninit<u64>],
    written: AtomicUsize,
    total: &'a AtomicUsize,
    stream: bool,
}

impl<'a> FreshPiece<'a> {
    /// Elements in the piece.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// The piece as one output of a pass that writes it whole.
    pub fn cut(&mut self) -> FreshCut<'_> {
        FreshCut {
            data: &mut *self.data,
            written: &self.written,
            stream: self.stream,
        }
    }

    /// The piece, once a pass has written all of it (counted towards the whole vector's check
    /// in [`Fresh::into_vec`]). Panics otherwise.
    pub fn into_written(self) -> &'a mut [u64] {
        let len = self.data.len();
        assert_eq!(
            self.written.load(Ordering::Acquire),
            len,
            "a fresh piece was not written whole"
        );
        self.total.fetch_add(len, Ordering::Release);
        // SAFETY: the piece's writers (`FreshCut::init` and friends) own disjoint parts of its
        // slots, write all of each and only then count it, so a count of `len` means every slot
        // is written.
        unsafe { assume_written(self.data) }
    }
}

/// Writes `dst` from the little-endian words in `src` (8 bytes per slot; panics on another
/// length) with non-temporal stores, where whole cache lines go straight to memory. For a
/// protocol's outputs, written once and not read again in the pass: an ordinary store to a line
/// not in cache first reads the line from memory, and on this machine writing a fresh 8 MB
/// vector that way took 0.87 ms against 0.35 streamed (0.50 with the values first in a chunk of
/// scratch memory), with memory bandwidth the limit of a product's passes.
#[cfg(target_arch = "x86_64")]
fn stream_le_words(dst: &mut [MaybeUninit<u64>], src: &[u8]) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
    assert_eq!(src.len(), 8 * dst.len(), "stream_le_words: lengths differ");
    // Ordinary stores up to the first 64-byte line, whole lines streamed, the rest ordinary.
    let misaligned = (dst.as_ptr() as usize / 8) % 8;
    let head = ((8 - misaligned) % 8).min(dst.len());
    let lines = (dst.len() - head) / 8;
    let (first, rest) = dst.split_at_mut(head);
    let (body, tail) = rest.split_at_mut(8 * lines);
    write_le_words(first, &src[..8 * head]);
    let body_src = &src[8 * head..8 * (head + 8 * lines)];
    for (line, words) in body.chunks_exact_mut(8).zip(body_src.chunks_exact(64)) {
        let out = line.as_mut_ptr() as *mut __m128i;
        for q in 0..4 {
            // SAFETY: `out` is a 64-byte aligned line of 8 slots (by `head`), so quarter q is an
            // aligned 16-byte slot inside it; `words` has 64 bytes to read. x86-64 is little
            // endian, so the bytes are the words.
            unsafe {
                let v = _mm_loadu_si128(words.as_ptr().add(16 * q) as *const __m128i);
                _mm_stream_si128(out.add(q), v);
            }
        }
    }
    write_le_words(tail, &src[8 * (head + 8 * lines)..]);
    // Streaming stores are weakly ordered: fence them before the chunk is counted written and
    // handed to another thread.
    // SAFETY: SSE2 is part of x86-64.
    unsafe { _mm_sfence() };
}

fn write_le_words(dst: &mut [MaybeUninit<u64>], src: &[u8]) {
    assert_eq!(src.len(), 8 * dst.len(), "write_le_words: lengths differ");
    for (o, b) in dst.iter_mut().zip(src.chunks_exact(8)) {
        o.write(u64::from_le_bytes(b.try_into().expect("8 bytes")));
    }
}

/// Slots as the words written into them.
///
/// # Safety
/// Every slot is written.
pub(crate) unsafe fn assume_written(slots: &mut [MaybeUninit<u64>]) -> &mut [u64] {
    // SAFETY: MaybeUninit<u64> has u64's layout, and the caller vouches for every slot.
    unsafe { &mut *(slots as *mut [MaybeUninit<u64>] as *mut [u64]) }
}

/// Initialised values seen as slots to overwrite, for writers that also take fresh memory.
/// Only whole initialised values may be stored through the result, so `out` stays initialised.
pub(crate) fn as_uninit<T: Copy>(out: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: MaybeUninit<T> has T's layout, and (above) only initialised values are stored.
    unsafe { &mut *(out as *mut [T] as *mut [MaybeUninit<T>]) }
}

/// A chunk of a [`Fresh`] vector, not yet written.
pub(crate) struct FreshCut<'a> {
    data: &'a mut [MaybeUninit<u64>],
    written: &'a AtomicUsize,
    stream: bool,
}

impl<'a> FreshCut<'a> {
    /// Elements in the chunk.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Writes the chunk from `vals` and returns it. Panics if `vals` has fewer items than the
    /// chunk (extra ones are ignored).
    pub fn init(self, vals: impl IntoIterator<Item = u64>) -> &'a mut [u64] {
        let mut count = 0;
        for (o, v) in self.data.iter_mut().zip(vals) {
            o.write(v);
            count += 1;
        }
        assert_eq!(count, self.data.len(), "a fresh chunk's values ended early");
        // SAFETY: every element of the chunk was written just above.
        unsafe { self.counted() }
    }

    /// Lets `write` write the chunk in place and returns it. `write` returns the chunk as
    /// written words, which only the whole of its argument may be (checked): a pass that forms
    /// values straight into fresh memory, where a buffer in cache and a copy would stall the copy
    /// loop on the stores.
    pub fn init_with(
        self,
        write: impl FnOnce(&mut [MaybeUninit<u64>]) -> &mut [u64],
    ) -> &'a mut [u64] {
        let (ptr, len) = (self.data.as_ptr() as *const u64, self.data.len());
        let done = write(&mut *self.data);
        assert!(
            std::ptr::eq(done.as_ptr(), ptr) && done.len() == len,
            "init_with: the writer returned other words than the chunk"
        );
        // SAFETY: `write` turned the chunk's slots into these very words, so all are written.
        unsafe { self.counted() }
    }

    /// Writes the chunk with the PRF words `start..` of (`nonce`, `purpose`): straight into
    /// the chunk, or through scratch memory and streamed in a large vector.
    pub fn init_prf(self, key: &Prf, nonce: u64, purpose: u32, start: usize) {
        if self.stream {
            with_scratch(self.len(), |buf| {
                key.fill_at(nonce, purpose, start, buf);
                self.init_streamed(buf);
            });
        } else {
            key.fill_uninit_at(nonce, purpose, start, self.data);
            // SAFETY: the keystream wrote every element of the chunk.
            unsafe { self.counted() };
        }
    }

    /// Writes the chunk from `words` (panics on another length), for a pass that forms the
    /// values in scratch memory and writes them once: streamed past the caches in a large
    /// vector ([`STREAM_MIN`]), else copied.
    pub fn init_streamed(self, words: &[u64]) {
        #[cfg(target_arch = "x86_64")]
        self.init_streamed_le(bytemuck::cast_slice(words));
        #[cfg(not(target_arch = "x86_64"))]
        {
            assert_eq!(
                words.len(),
                self.data.len(),
                "init_streamed: lengths differ"
            );
            for (o, &w) in self.data.iter_mut().zip(words) {
                o.write(w);
            }
            // SAFETY: the loop wrote every slot (the lengths are equal).
            unsafe { self.counted() };
        }
    }

    /// [`FreshCut::init_streamed`] from little-endian words on the wire (8 bytes each).
    pub fn init_streamed_le(self, bytes: &[u8]) {
        #[cfg(target_arch = "x86_64")]
        if self.stream {
            stream_le_words(self.data, bytes);
            // SAFETY: `stream_le_words` wrote every slot (or panicked on a short `bytes`).
            unsafe { self.counted() };
            return;
        }
        write_le_words(self.data, bytes);
        // SAFETY: `write_le_words` wrote every slot (or panicked on a short `bytes`).
        unsafe { self.counted() };
    }

    /// Counts the chunk as written and returns its words.
    ///
    /// # Safety
    /// Every slot of the chunk is written.
    unsafe fn counted(self) -> &'a mut [u64] {
        self.written.fetch_add(self.data.len(), Ordering::Release);
        // SAFETY: the caller's promise.
        unsafe { assume_written(self.data) }
    }
}

impl Parts for FreshCut<'_> {
    fn split_at(self, elem: usize) -> (Self, Self) {
        let at = elem.min(self.data.len());
        let (a, b) = self.data.split_at_mut(at);
        let w = self.written;
        (
            FreshCut {
                data: a,
                written: w,
                stream: self.stream,
            },
            FreshCut {
                data: b,
                written: w,
                stream: self.stream,
            },
        )
    }
}

/// An outgoing message of `n` bytes that passes write chunk by chunk with no zero fill first
/// (what [`Fresh`] is for words): a fill of the 8-26 bytes per element that a product's
/// frames take was a memset of every frame before the pass overwrote it. [`Frame::cut`] is the
/// whole frame as one output, which [`FrameCut::split_bytes`] cuts into regions (say, words
/// then packed fields); each chunk of a region is written whole, once, by
/// [`FrameCut::put_words`] or [`FrameCut::put_packed`]; [`Frame::into_vec`] checks that every
/// byte was.
pub(crate) struct Frame(Unwritten<u8>);

impl Frame {
    pub fn new(n: usize) -> Self {
        Frame(Unwritten::new(n))
    }

    /// The whole frame, one byte per element until [`FrameCut::words`] or
    /// [`FrameCut::packed`] says otherwise.
    pub fn cut(&mut self) -> FrameCut<'_> {
        let (data, written) = self.0.slots();
        FrameCut {
            data,
            written,
            num: 1,
            den: 1,
        }
    }

    /// The message, once every byte is written (the writers assert their chunk's size). Panics
    /// otherwise.
    pub fn into_vec(self) -> Vec<u8> {
        self.0.finish("a frame")
    }
}

/// A region or chunk of a [`Frame`], not yet written.
pub(crate) struct FrameCut<'a> {
    data: &'a mut [std::mem::MaybeUninit<u8>],
    written: &'a AtomicUsize,
    num: usize,
    den: usize,
}

impl<'a> FrameCut<'a> {
    /// The first `at` bytes and the rest.
    pub fn split_bytes(self, at: usize) -> (Self, Self) {
        let (a, b) = self.data.split_at_mut(at.min(self.data.len()));
        let w = self.written;
        let (num, den) = (self.num, self.den);
        (
            FrameCut {
                data: a,
                written: w,
                num,
                den,
            },
            FrameCut {
                data: b,
                written: w,
                num,
                den,
            },
        )
    }

    /// This region as the little-endian bytes of one word per element.
    pub fn words(self) -> Self {
        FrameCut {
            num: 8,
            den: 1,
            ..self
        }
    }

    /// This region as `width` bits per element, packed (see `wire::pack_bits`).
    pub fn packed(self, width: u32) -> Self {
        FrameCut {
            num: width as usize,
            den: 8,
            ..self
        }
    }

    /// Writes the chunk: the little-endian bytes of `words` (8 per word, exactly its length).
    pub fn put_words(self, words: &[u64]) {
        crate::wire::push_le_uninit(self.data, words);
        self.written.fetch_add(self.data.len(), Ordering::Release);
    }

    /// Writes the chunk: `vals` packed in `width` bits each (exactly its length).
    pub fn put_packed(self, vals: &[u64], width: u32) {
        crate::wire::pack_into_uninit(self.data, vals, width);
        self.written.fetch_add(self.data.len(), Ordering::Release);
    }
}

impl Parts for FrameCut<'_> {
    fn split_at(self, elem: usize) -> (Self, Self) {
        let at = elem * self.num / self.den;
        self.split_bytes(at)
    }
}

/// A new vector of `n` words: elements `start..start + len` are the items of `body(start,
/// len)`, chunk by chunk as in [`run`], written once (see [`Fresh`]).
pub(crate) fn collect_words<I: Iterator<Item = u64>>(
    n: usize,
    body: &(impl Fn(usize, usize) -> I + Sync),
) -> Vec<u64> {
    let mut v = Fresh::new(n);
    run(n, v.cut(), &|start, len, c| {
        c.init(body(start, len));
    });
    v.into_vec()
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
            // A frame of one word per element, then 18-bit packed fields, like R0's message.
            let mut frame = Frame::new(8 * n + crate::wire::packed_len(n, 18));
            let (bytes, packed) = frame.cut().split_bytes(8 * n);
            let calls = AtomicUsize::new(0);
            let parts = (Cut::words(&mut words[..]), bytes.words(), packed.packed(18));
            run(n, parts, &|start, len, (w, b, p)| {
                assert!(start % CHUNK == 0 && len <= CHUNK && len > 0);
                assert_eq!(w.data.len(), len);
                assert_eq!(b.data.len(), 8 * len);
                assert_eq!(p.data.len(), crate::wire::packed_len(len, 18));
                for (i, x) in w.data.iter_mut().enumerate() {
                    *x += (start + i) as u64 + 1;
                }
                b.put_words(w.data);
                p.put_packed(w.data, 18);
                calls.fetch_add(1, Ordering::Relaxed);
            });
            assert!(words.iter().enumerate().all(|(i, &x)| x == i as u64 + 1));
            // The frame holds exactly what a whole-vector encoding would.
            let mut want = crate::wire::encode_words(&words);
            crate::wire::pack_bits(&mut want, &words, 18);
            assert_eq!(frame.into_vec(), want);
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

    #[test]
    #[should_panic(expected = "other words than the chunk")]
    fn a_writer_that_returns_other_words_is_refused() {
        let mut v = Fresh::new(8);
        let elsewhere: &'static mut [u64] = Box::leak(Box::new([0u64; 8]));
        v.cut().init_with(|_| elsewhere);
    }

    #[test]
    fn a_writer_fills_its_chunk_in_place() {
        let mut v = Fresh::new(2 * CHUNK + 5);
        run(2 * CHUNK + 5, v.cut(), &|start, _, c| {
            c.init_with(|slots| {
                for (i, s) in slots.iter_mut().enumerate() {
                    s.write((start + i) as u64 * 3);
                }
                // SAFETY: every slot was written just above.
                unsafe { assume_written(slots) }
            });
        });
        let v = v.into_vec();
        assert!(v.iter().enumerate().all(|(i, x)| *x == i as u64 * 3));
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn streamed_words_match_a_plain_copy_at_every_alignment_and_length() {
        // Heads, whole 64-byte lines and tails in every combination: the destination starts
        // at each word of a line and the lengths straddle line boundaries.
        let src: Vec<u64> = (0..300u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        for offset in 0..8 {
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 130, 291] {
                let mut buf = vec![MaybeUninit::new(u64::MAX); 300 + 16];
                let dst = &mut buf[offset..offset + len];
                let bytes: Vec<u8> = src[..len].iter().flat_map(|w| w.to_le_bytes()).collect();
                stream_le_words(dst, &bytes);
                // SAFETY: the whole buffer was initialised at creation.
                let all = unsafe { assume_written(&mut buf) };
                assert_eq!(
                    &all[offset..offset + len],
                    &src[..len],
                    "offset {offset} len {len}"
                );
                assert!(all[..offset].iter().all(|&x| x == u64::MAX));
                assert!(all[offset + len..].iter().all(|&x| x == u64::MAX));
            }
        }
    }

    #[test]
    fn large_fresh_vectors_stream_and_small_ones_copy_the_same_values() {
        for n in [STREAM_MIN - 3, STREAM_MIN + 5 * CHUNK + 3] {
            let mut v = Fresh::new(n);
            assert_eq!(v.stream, n >= STREAM_MIN);
            run(n, v.cut(), &|start, len, c| {
                let vals: Vec<u64> = (start..start + len).map(|i| i as u64 ^ 0x55).collect();
                c.init_streamed(&vals);
            });
            let v = v.into_vec();
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 ^ 0x55));
            let key = Prf::new([3; 16]);
            let mut w = Fresh::new(n);
            run(n, w.cut(), &|start, _, c| c.init_prf(&key, 9, 2, start));
            let mut want = vec![0u64; n];
            key.fill_at(9, 2, 0, &mut want);
            assert_eq!(w.into_vec(), want);
        }
    }

    #[test]
    #[should_panic(expected = "a frame was not written whole")]
    fn a_frame_with_a_skipped_chunk_is_refused() {
        let mut f = Frame::new(8 * 3 * CHUNK);
        let words = vec![7u64; CHUNK];
        run(3 * CHUNK, f.cut().words(), &|start, len, c| {
            if start != CHUNK {
                c.put_words(&words[..len]);
            }
        });
        f.into_vec();
    }

    #[test]
    #[should_panic(expected = "not written whole")]
    fn a_fresh_vector_with_a_skipped_chunk_is_refused() {
        let mut v = Fresh::new(3 * CHUNK);
        run(3 * CHUNK, v.cut(), &|start, len, c| {
            if start != CHUNK {
                c.init(std::iter::repeat_n(1, len));
            }
        });
        v.into_vec();
    }

    #[test]
    fn lag_finishes_each_item_one_push_later_and_the_last_at_finish() {
        let mut done = Vec::new();
        let mut lag = Lag::new();
        for item in 1..=3 {
            lag.push(item, |held| {
                done.push((item, held));
                Ok::<(), ()>(())
            })
            .unwrap();
        }
        lag.finish(|held| {
            done.push((0, held));
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(done, [(2, 1), (3, 2), (0, 3)]);
        assert_eq!(Lag::<u8>::new().finish(|_| Err("no item")), Ok(()));
    }

    #[test]
    fn fresh_pieces_are_written_then_rewritten_out_of_order_and_form_the_vector() {
        let lens = [2 * CHUNK, PAR_MIN + 64, 5];
        let n: usize = lens.iter().sum();
        let mut v = Fresh::new(n);
        {
            let mut pieces = v.pieces(lens);
            let mut done = Vec::new();
            let mut first = 0;
            for p in pieces.iter_mut() {
                let len = p.cut().len();
                run(len, p.cut(), &|start, len, c| {
                    c.init((first + start..first + start + len).map(|i| i as u64));
                });
                first += len;
            }
            for p in pieces.into_iter().rev() {
                let w = p.into_written();
                w.iter_mut().for_each(|x| *x *= 3);
                done.push(w.len());
            }
            assert_eq!(done, [5, PAR_MIN + 64, 2 * CHUNK]);
        }
        let v = v.into_vec();
        assert!(v.iter().enumerate().all(|(i, &x)| x == 3 * i as u64));
    }

    #[test]
    #[should_panic(expected = "a fresh piece was not written whole")]
    fn a_fresh_piece_with_a_skipped_chunk_is_refused() {
        let mut v = Fresh::new(4 * CHUNK);
        let mut pieces = v.pieces([CHUNK, 3 * CHUNK]);
        run(3 * CHUNK, pieces[1].cut(), &|start, len, c| {
            if start != CHUNK {
                c.init(std::iter::repeat_n(1, len));
            }
        });
        pieces.pop().unwrap().into_written();
    }

    #[test]
    #[should_panic(expected = "a fresh vector was not written whole")]
    fn a_fresh_vector_with_an_untaken_piece_is_refused() {
        let mut v = Fresh::new(2 * CHUNK);
        let mut pieces = v.pieces([CHUNK, CHUNK]);
        for p in pieces.iter_mut() {
            run(CHUNK, p.cut(), &|_, len, c| {
                c.init(std::iter::repeat_n(1, len));
            });
        }
        pieces.pop().unwrap().into_written();
        drop(pieces);
        v.into_vec();
    }

    #[test]
    #[should_panic(expected = "ended early")]
    fn a_fresh_chunk_needs_all_its_values() {
        let mut v = Fresh::new(10);
        run(10, v.cut(), &|_, _, c| {
            c.init([1, 2, 3]);
        });
    }
}
