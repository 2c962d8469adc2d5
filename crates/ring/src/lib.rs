//! Tensors over the ring Z_2^64 (wrapping u64), fixed-point encoding, and fast local kernels.
