//! Three-party replicated secret sharing over Z_2^64 (ABY3, semi-honest, honest majority): the
//! protocol core of secdiff.
//!
//! # API at a glance (stable; later additions only)
//! - [`Party`]: one party's context. [`Party::setup`] agrees PRF keys over a `net::Transport`;
//!   [`run_local`] runs a closure at three parties in three threads (tests, `--local`).
//!   [`FixedConfig`] holds the fractional bits f (default 18) and the default [`TruncMethod`].
//! - [`AShare`]: arithmetic replicated share of a tensor. Local: `add`, `sub`, `neg`,
//!   `add_public`, `add_scalar`, `mul_public_raw`, `scale_raw`/`scale_int` (no rescaling),
//!   `reshape`, `permute`, `narrow`, `concat`, `broadcast_to`, `sum_axis`,
//!   `upsample_nearest2d`, `transpose_last2`.
//! - [`BShare`]: boolean replicated share, bit-sliced (one plane per bit, 64 values per word).
//!   A comparison returns a 1-plane `BShare`. Local: `xor`, `not`, `and_public`, `planes`.
//! - In/out ([`io`]): [`deal`] (an outside owner shares a tensor), [`Party::input`] (a party
//!   shares its own tensor), [`Party::reveal_all`], [`Party::reveal_to`], [`OutputShare`] +
//!   [`reconstruct`] (output to the owner).
//! - Fixed-point products, each followed by truncation by f ([`arith`]): [`Party::mul`],
//!   [`Party::square`], [`Party::matmul`], [`Party::conv2d`], [`Party::conv_transpose2d`] (secret
//!   by secret) and [`Party::mul_public`], [`Party::scale`], [`Party::matmul_public`],
//!   [`Party::conv2d_public`], [`Party::conv_transpose2d_public`] (by public values);
//!   [`Party::trunc`] on its own; [`Party::mul_raw`] for integer products. `_with` variants
//!   override the truncation method per call.
//! - Boolean and comparisons ([`boolean`]): [`Party::and`], [`Party::a2b`], [`Party::msb`],
//!   [`Party::msb_bounded`] (|x| < 2^k: works on k + 1 bits), [`Party::less_than`],
//!   [`Party::less_than_public`], [`Party::less_than_scalar`], [`Party::less_than_bounded`].
//! - Conversions ([`convert`]): [`Party::b2a`] (bit injection), [`Party::mux`] (bit * value),
//!   [`Party::select`], [`Party::relu`], [`Party::max_axis`] (tree).
//!
//! Every protocol is vectorised over whole tensors, opens a `net::Meter` scope with its name, and
//! states its rounds and bytes per party next to its code (the `*_cost` functions); the tests in
//! `tests/` check the stated cost against the metered one exactly, and the results against
//! plaintext fixed-point arithmetic.
//!
//! Fixed-point convention: a real v is the ring element round(v 2^f); products carry 2f
//! fractional bits until truncated. Use `ring::FixedPoint` to encode and decode.

pub mod arith;
mod ashare;
pub mod bench;
pub mod boolean;
mod bshare;
mod config;
pub mod convert;
mod error;
mod fused;
pub mod io;
mod keystream;
pub mod nonlinear;
mod party;
pub mod prf;
mod runner;
pub mod wire;

pub use arith::{product_cost, trunc_cost, Cost};
pub use ashare::AShare;
pub use bshare::{from_planes, to_planes, words_for, BShare};
pub use config::{FixedConfig, TruncMethod};
pub use error::{MpcError, Result};
pub use io::{deal, deal_values, reconstruct, OutputShare, OwnerShare};
pub use party::{Ctx, Party};
pub use runner::{run_local, run_with, SharedTransport, LOCAL_TIMEOUT};
