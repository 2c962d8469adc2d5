//! Stated costs of the nonlinear functions: what a kernel costs follows from the protocol calls
//! it makes (the twin records them, with their sizes) and the core's stated cost of each
//! protocol. Tests run the secure kernel and check the metered bytes and protocol invocations
//! against this statement exactly; `secdiff bench accuracy` prints it per element.
//!
//! Per call (n elements, d truncated bits, w = ceil(n/64) words, all bytes summed over the three
//! parties; per-party bytes depend on the helper rotation and are not stated here):
//! - fma jobs with secret products: `product_cost(n, trunc d)` (fast: 24n; robust: about
//!   37.5n at d = 18); jobs without: `trunc_cost(n, d)` (fast: 8n); a job marked robust uses the
//!   robust truncation whatever the session's method. One invocation per group of jobs with the
//!   same kind, d and method.
//! - dot_runs: `product_cost(runs, trunc d)`.
//! - less_than: `msb_cost(n, width)` per group of jobs with the same width (about
//!   3 (width + T)/8 bytes per element, T the carry tree's ANDs).
//! - select: `mux_cost(n)` = 32n.
//! - pow2_scale: Brent-Kung A2B of `planes` bits (8w (3 planes - 2 + 3 P), P its AND planes), one AND
//!   batch for the two-plane groups, one per doubling level of the suffix OR (24w per plane),
//!   then the injection: R0's message (sum of `inject_widths` bits per element) and a robust
//!   fused truncation `product_cost(n, robust, inject_shift)`.

use super::ops::{Pow2Layout, Result};
use super::twin::TwinCall;
use crate::arith::{product_cost, trunc_cost};
use crate::boolean::{and_cost, brent_kung_ands, msb_cost};
use crate::bshare::words_for;
use crate::config::TruncMethod;
use crate::convert::mux_cost;
use crate::wire::packed_len;

/// Bytes (summed over the three parties) and protocol invocations of a kernel run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stated {
    pub bytes: u64,
    pub invocations: u64,
}

impl std::ops::AddAssign for Stated {
    fn add_assign(&mut self, o: Stated) {
        self.bytes += o.bytes;
        self.invocations += o.invocations;
    }
}

fn one(bytes: u64) -> Stated {
    Stated {
        bytes,
        invocations: 1,
    }
}

/// Stated cost of the Brent-Kung A2B of `bits` planes of n values (what `pow2_scale` uses).
pub fn a2b_brent_kung_cost(n: usize, bits: usize) -> u64 {
    let w8 = 8 * words_for(n) as u64;
    let ands: usize = brent_kung_ands(bits - 1).iter().sum();
    w8 * (bits as u64 + 2 * (bits as u64 - 1) + 3 * ands as u64)
}

/// Stated cost of the A2B of `bits` planes of n values (the core's Kogge-Stone conversion).
pub fn a2b_cost(n: usize, bits: usize) -> u64 {
    let w8 = 8 * words_for(n) as u64;
    let mut pairs = 0usize;
    let mut span = 1;
    while span < bits - 1 {
        pairs += (bits - 1 - span) + (bits - 1).saturating_sub(2 * span);
        span *= 2;
    }
    w8 * (bits as u64 + 2 * (bits as u64 - 1) + 3 * pairs as u64)
}

/// Stated cost of `pow2_scale` on n values.
pub fn pow2_cost(n: usize, layout: &Pow2Layout) -> Stated {
    let mut s = one(a2b_brent_kung_cost(n, layout.planes));
    if layout.pair_groups() > 0 {
        s += one(and_cost(n, layout.pair_groups()).total_bytes());
    }
    for planes in layout.suffix_levels() {
        s += one(and_cost(n, planes).total_bytes());
    }
    let msg: u64 = layout
        .inject_widths()
        .iter()
        .map(|&w| packed_len(n, w) as u64)
        .sum();
    let finish = product_cost(n, Some((TruncMethod::Robust, layout.inject_shift())));
    s += one(msg + finish.total_bytes());
    s
}

/// The stated cost of the protocol calls `calls` at `frac_bits` with truncation `method`.
pub fn stated_cost(calls: &[TwinCall], frac_bits: u32, method: TruncMethod) -> Result<Stated> {
    let mut s = Stated::default();
    for call in calls {
        match call {
            TwinCall::Fma(jobs) => {
                let mut groups: Vec<((bool, u32, bool), usize)> = Vec::new();
                for &(n, products, d, robust) in jobs {
                    match groups.iter_mut().find(|g| g.0 == (products, d, robust)) {
                        Some(g) => g.1 += n,
                        None => groups.push(((products, d, robust), n)),
                    }
                }
                for ((products, d, robust), n) in groups {
                    let m = if robust { TruncMethod::Robust } else { method };
                    s += one(if products {
                        product_cost(n, Some((m, d))).total_bytes()
                    } else {
                        trunc_cost(n, m, d).total_bytes()
                    });
                }
            }
            TwinCall::DotRuns(runs, d) => {
                let t = (*d > 0).then_some((method, *d));
                s += one(product_cost(*runs, t).total_bytes());
            }
            TwinCall::LessThan(jobs) => {
                let mut widths: Vec<(usize, usize)> = Vec::new();
                for &(n, w) in jobs {
                    match widths.iter_mut().find(|g| g.0 == w) {
                        Some(g) => g.1 += n,
                        None => widths.push((w, n)),
                    }
                }
                for (w, n) in widths {
                    s += one(msb_cost(n, w).total_bytes());
                }
            }
            TwinCall::Select(lens) => {
                s += one(mux_cost(lens.iter().sum()).total_bytes());
            }
            TwinCall::Pow2Scale(n, root, lo, hi) => {
                s += pow2_cost(*n, &Pow2Layout::new(frac_bits, *root, *lo, *hi)?);
            }
        }
    }
    Ok(s)
}
