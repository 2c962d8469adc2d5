//! Tensors over the ring Z_2^64 (wrapping u64), fixed-point encoding, and fast local kernels:
//! wrapping GEMM and im2col (transposed) convolution. Everything here is local computation; the
//! `mpc` crate runs these kernels on each share component.

pub mod conv;
mod error;
pub mod fixed;
pub mod gemm;
mod tensor;

pub use conv::{ConvGeometry, ConvPadding};
pub use error::{Result, RingError};
pub use fixed::{FixedPoint, DEFAULT_FRAC_BITS};
pub use tensor::{broadcast_shape, matmul_dims, strides, RingTensor};
