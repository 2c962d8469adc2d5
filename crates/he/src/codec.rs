//! Little-endian byte encoding for everything this crate puts on the wire or on disk. The reader
//! names what it is decoding, so a short or malformed input becomes `Error::Truncated` /
//! `Error::Corrupt` with the object's name instead of a panic.

use crate::error::{Error, Result};

/// Appends little-endian values to a byte vector.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn f64(&mut self, v: f64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// A u64 length followed by the bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u64(v.len() as u64).raw(v)
    }
    pub fn f32s(&mut self, v: &[f32]) -> &mut Self {
        self.u64(v.len() as u64);
        self.buf.reserve(v.len() * 4);
        for x in v {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
        self
    }
    pub fn f64s(&mut self, v: &[f64]) -> &mut Self {
        self.u64(v.len() as u64);
        self.buf.reserve(v.len() * 8);
        for x in v {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
        self
    }
    pub fn u32s(&mut self, v: &[u32]) -> &mut Self {
        self.u64(v.len() as u64);
        self.buf.reserve(v.len() * 4);
        for x in v {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
        self
    }
    pub fn usizes(&mut self, v: &[usize]) -> &mut Self {
        self.u64(v.len() as u64);
        for &x in v {
            self.u64(x as u64);
        }
        self
    }
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads little-endian values from a byte slice, failing with the name of the object on short or
/// malformed input.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::Truncated {
                what: self.what,
                needed: self.pos.saturating_add(n),
                got: self.buf.len(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    /// A length prefix for items of `item_size` bytes, checked against what is left so that a
    /// forged length cannot make us allocate more than the input holds.
    pub fn len_prefix(&mut self, item_size: usize) -> Result<usize> {
        let n = self.u64()?;
        let need = (n as u128) * (item_size as u128);
        if need > self.remaining() as u128 {
            return Err(Error::Truncated {
                what: self.what,
                needed: self
                    .pos
                    .saturating_add(need.min(usize::MAX as u128) as usize),
                got: self.buf.len(),
            });
        }
        Ok(n as usize)
    }
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.len_prefix(1)?;
        self.take(n)
    }
    pub fn f32s(&mut self) -> Result<Vec<f32>> {
        let n = self.len_prefix(4)?;
        let raw = self.take(n * 4)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
    pub fn f64s(&mut self) -> Result<Vec<f64>> {
        let n = self.len_prefix(8)?;
        let raw = self.take(n * 8)?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")))
            .collect())
    }
    pub fn u32s(&mut self) -> Result<Vec<u32>> {
        let n = self.len_prefix(4)?;
        let raw = self.take(n * 4)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
    pub fn usizes(&mut self) -> Result<Vec<usize>> {
        let n = self.len_prefix(8)?;
        (0..n)
            .map(|_| {
                let v = self.u64()?;
                usize::try_from(v).map_err(|_| Error::corrupt(self.what, "size overflows usize"))
            })
            .collect()
    }

    /// Checks a magic tag and a format version.
    pub fn header(&mut self, magic: &[u8; 4], version: u16) -> Result<()> {
        let m = self.take(4)?;
        if m != magic {
            return Err(Error::corrupt(
                self.what,
                format!("bad magic {m:02x?}, expected {magic:02x?}"),
            ));
        }
        let v = self.u16()?;
        if v != version {
            return Err(Error::corrupt(
                self.what,
                format!("format version {v}, this build reads version {version}"),
            ));
        }
        Ok(())
    }

    /// Fails if anything is left over (a sign of a framing error or tampering).
    pub fn finish(self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(Error::corrupt(
                self.what,
                format!("{} trailing bytes", self.remaining()),
            ));
        }
        Ok(())
    }

    pub fn corrupt(&self, detail: impl std::fmt::Display) -> Error {
        Error::corrupt(self.what, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut w = Writer::new();
        w.raw(b"TEST")
            .u16(3)
            .u32(7)
            .f64(1.5)
            .f32s(&[1.0, -2.0])
            .bytes(b"xy");
        let buf = w.finish();
        let mut r = Reader::new(&buf, "test blob");
        r.header(b"TEST", 3).unwrap();
        assert_eq!(r.u32().unwrap(), 7);
        assert_eq!(r.f64().unwrap(), 1.5);
        assert_eq!(r.f32s().unwrap(), vec![1.0, -2.0]);
        assert_eq!(r.bytes().unwrap(), b"xy");
        r.finish().unwrap();

        let short = &buf[..buf.len() - 1];
        let mut r = Reader::new(short, "test blob");
        r.header(b"TEST", 3).unwrap();
        r.u32().unwrap();
        r.f64().unwrap();
        r.f32s().unwrap();
        assert!(matches!(r.bytes(), Err(Error::Truncated { .. })));
    }

    #[test]
    fn forged_length_does_not_allocate() {
        let mut w = Writer::new();
        w.u64(u64::MAX / 2);
        let buf = w.finish();
        let mut r = Reader::new(&buf, "blob");
        assert!(matches!(r.f64s(), Err(Error::Truncated { .. })));
    }
}
