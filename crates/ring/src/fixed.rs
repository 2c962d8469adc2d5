//! Two's-complement fixed-point numbers in Z_2^64: a real v is the ring element round(v * 2^f)
//! (negative values wrap to the top of the ring). `f` (the fractional bits) defaults to 18, as in
//! SPU and CipherDM.

use crate::error::{Result, RingError};

/// Default number of fractional bits.
pub const DEFAULT_FRAC_BITS: u32 = 18;

/// Fixed-point encoding with `frac_bits` fractional bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedPoint {
    pub frac_bits: u32,
}

impl Default for FixedPoint {
    fn default() -> Self {
        FixedPoint {
            frac_bits: DEFAULT_FRAC_BITS,
        }
    }
}

/// The ring element read as a signed integer.
#[inline]
pub fn signed(v: u64) -> i64 {
    v as i64
}

impl FixedPoint {
    pub fn new(frac_bits: u32) -> Self {
        FixedPoint { frac_bits }
    }

    /// 2^f as a float.
    pub fn scale(&self) -> f64 {
        (self.frac_bits as f64).exp2()
    }

    /// The encoding of 1.0.
    pub fn one(&self) -> u64 {
        1u64 << self.frac_bits
    }

    /// round(v * 2^f) mod 2^64; fails on non-finite values and on |v| >= 2^(63 - f).
    pub fn encode(&self, v: f64) -> Result<u64> {
        let err = |reason| RingError::Encode {
            value: v,
            frac_bits: self.frac_bits,
            reason,
        };
        if !v.is_finite() {
            return Err(err("not a finite number"));
        }
        let s = (v * self.scale()).round();
        if s.abs() >= 2f64.powi(63) {
            return Err(err("out of the ring's signed range"));
        }
        Ok(s as i64 as u64)
    }

    pub fn encode_slice(&self, vs: &[f64]) -> Result<Vec<u64>> {
        vs.iter().map(|&v| self.encode(v)).collect()
    }

    pub fn encode_f32(&self, vs: &[f32]) -> Result<Vec<u64>> {
        vs.iter().map(|&v| self.encode(v as f64)).collect()
    }

    pub fn decode(&self, x: u64) -> f64 {
        signed(x) as f64 / self.scale()
    }

    pub fn decode_slice(&self, xs: &[u64]) -> Vec<f64> {
        xs.iter().map(|&x| self.decode(x)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_signs() {
        let fp = FixedPoint::default();
        for v in [0.0, 1.0, -1.0, 3.25, -1234.5, 1e-5] {
            let e = fp.encode(v).unwrap();
            assert!((fp.decode(e) - v).abs() <= 0.5 / fp.scale(), "{v}");
        }
        assert_eq!(fp.encode(-1.0).unwrap(), (1u64 << 18).wrapping_neg());
        assert!(fp.encode(f64::NAN).is_err());
        assert!(fp.encode(1e40).is_err());
    }
}
