//! Three-party replicated secret sharing over Z_2^64 (ABY3, semi-honest, honest majority).

pub mod nonlinear;
