//! The plaintext tensor: a shape and a shared, immutable f32 buffer (row-major).
//!
//! The buffer sits behind an `Arc` so that `clone` and `reshape` are free; every op writes a
//! fresh buffer.

use std::sync::Arc;

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct PlainTensor {
    shape: Vec<usize>,
    data: Arc<Vec<f32>>,
}

impl PlainTensor {
    /// A tensor of `shape` holding `data` (row-major); fails if the sizes disagree.
    pub fn new(shape: &[usize], data: Vec<f32>) -> Result<Self> {
        let numel = checked_numel(shape)?;
        if numel != data.len() {
            return Err(Error::shape(
                "tensor",
                format!("shape {shape:?} needs {numel} values, got {}", data.len()),
            ));
        }
        Ok(Self::from_parts(shape.to_vec(), data))
    }

    pub fn zeros(shape: &[usize]) -> Result<Self> {
        let numel = checked_numel(shape)?;
        Ok(Self::from_parts(shape.to_vec(), vec![0.0; numel]))
    }

    /// Internal constructor for buffers whose size the caller has already matched to `shape`.
    pub(crate) fn from_parts(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        PlainTensor {
            shape,
            data: Arc::new(data),
        }
    }

    pub(crate) fn with_shape(&self, shape: Vec<usize>) -> Self {
        PlainTensor {
            shape,
            data: Arc::clone(&self.data),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The values, without a copy when this is the only handle to them.
    pub fn into_vec(self) -> Vec<f32> {
        Arc::try_unwrap(self.data).unwrap_or_else(|shared| (*shared).clone())
    }

    /// Largest absolute elementwise difference to `other` (shapes must match).
    pub fn max_abs_diff(&self, other: &PlainTensor) -> Result<f32> {
        if self.shape != other.shape {
            return Err(Error::shape(
                "max_abs_diff",
                format!("{:?} vs {:?}", self.shape, other.shape),
            ));
        }
        Ok(self
            .data
            .iter()
            .zip(other.data.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max))
    }
}

/// Number of elements of `shape`, failing (instead of wrapping) on absurd shapes from files.
pub(crate) fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / 4)
        .ok_or_else(|| Error::shape("tensor", format!("shape {shape:?} is too large")))
}
