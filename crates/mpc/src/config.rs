//! Fixed-point configuration of a session: fractional bits and the truncation method that every
//! fixed-point product uses unless a call overrides it.

use ring::{FixedPoint, DEFAULT_FRAC_BITS};

/// How a fixed-point product is scaled back by 2^-f. See `arith` for both protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TruncMethod {
    /// Local shift of a 2-way split (one share held by one party, the other by two), fused with
    /// the multiplication: one round, one ring element per party. Fails with a huge error
    /// (about 2^(64-d) in the ring) with probability |z| / 2^64 per element, z the un-truncated
    /// value.
    Fast,
    /// The same split corrected by the carry bit of the two shares' sign bits (an oblivious
    /// transfer of d-bit messages): never a large error while |z| < 2^62, error at most 1 ulp.
    /// Two rounds fused with a multiplication (one on its own), 192 + 6d bits per element.
    Robust,
}

impl TruncMethod {
    pub fn name(&self) -> &'static str {
        match self {
            TruncMethod::Fast => "fast",
            TruncMethod::Robust => "robust",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fast" => Some(TruncMethod::Fast),
            "robust" => Some(TruncMethod::Robust),
            _ => None,
        }
    }
}

impl std::fmt::Display for TruncMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Fixed-point arithmetic settings shared by the three parties of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedConfig {
    pub frac_bits: u32,
    pub trunc: TruncMethod,
}

impl Default for FixedConfig {
    fn default() -> Self {
        FixedConfig {
            frac_bits: DEFAULT_FRAC_BITS,
            trunc: TruncMethod::Robust,
        }
    }
}

impl FixedConfig {
    pub fn new(frac_bits: u32, trunc: TruncMethod) -> Self {
        FixedConfig { frac_bits, trunc }
    }

    pub fn fixed_point(&self) -> FixedPoint {
        FixedPoint::new(self.frac_bits)
    }
}
