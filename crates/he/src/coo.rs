//! A COO sparse tensor: a dense shape, the linear (row-major) coordinates of its stored entries in
//! plaintext, and the entries' values (f64 in the clear, or packed into CKKS ciphertexts). This is
//! how HE-Diffusion ships the encrypted part y of the latent: only y's values are encrypted, its
//! positions are public.
//!
//! Coordinates are linear indices rather than one row per dimension: the same information in a
//! quarter of the bytes. They must be strictly increasing (sorted, no duplicates) and inside the
//! shape; [`Coo::new`] refuses anything else, so a server can never make the client scatter a
//! value outside the latent or twice into one entry.

use crate::ckks::EncryptedVector;
use crate::error::{Error, Result};

/// Something that holds one value per stored entry.
pub trait CooValues {
    fn value_count(&self) -> usize;
}

impl CooValues for Vec<f64> {
    fn value_count(&self) -> usize {
        self.len()
    }
}

impl CooValues for EncryptedVector {
    fn value_count(&self) -> usize {
        self.len()
    }
}

#[derive(Debug)]
pub struct Coo<V> {
    shape: Vec<usize>,
    indices: Vec<u32>,
    values: V,
}

impl<V: CooValues> Coo<V> {
    pub fn new(shape: Vec<usize>, indices: Vec<u32>, values: V) -> Result<Coo<V>> {
        validate_indices(&shape, &indices)?;
        if values.value_count() != indices.len() {
            return Err(Error::Coo(format!(
                "{} indices but {} values",
                indices.len(),
                values.value_count()
            )));
        }
        Ok(Coo {
            shape,
            indices,
            values,
        })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn indices(&self) -> &[u32] {
        &self.indices
    }
    pub fn values(&self) -> &V {
        &self.values
    }
    pub fn into_parts(self) -> (Vec<usize>, Vec<u32>, V) {
        (self.shape, self.indices, self.values)
    }

    /// The same positions with other values (e.g. after a homomorphic update or decryption).
    pub fn with_values<W: CooValues>(&self, values: W) -> Result<Coo<W>> {
        Coo::new(self.shape.clone(), self.indices.clone(), values)
    }

    /// Linear indices of the entries *not* stored, increasing: where the plaintext part lives.
    pub fn complement(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.numel() - self.indices.len());
        let mut next = self.indices.iter().peekable();
        for i in 0..self.numel() as u32 {
            if next.peek() == Some(&&i) {
                next.next();
            } else {
                out.push(i);
            }
        }
        out
    }
}

impl Coo<Vec<f64>> {
    /// Writes the stored values into a dense tensor of this shape.
    pub fn scatter_into(&self, dense: &mut [f32]) -> Result<()> {
        if dense.len() != self.numel() {
            return Err(Error::shape(
                "COO scatter",
                format!("dense tensor of {} for shape {:?}", dense.len(), self.shape),
            ));
        }
        for (&i, &v) in self.indices.iter().zip(&self.values) {
            dense[i as usize] = v as f32;
        }
        Ok(())
    }
}

/// Indices must lie inside `shape` and be strictly increasing.
pub fn validate_indices(shape: &[usize], indices: &[u32]) -> Result<()> {
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= u32::MAX as usize)
        .ok_or_else(|| Error::Coo(format!("shape {shape:?} too large")))?;
    for (k, &i) in indices.iter().enumerate() {
        if i as usize >= numel {
            return Err(Error::Coo(format!(
                "index {i} (entry {k}) out of range for shape {shape:?} ({numel} entries)"
            )));
        }
        if k > 0 && indices[k - 1] >= i {
            return Err(Error::Coo(if indices[k - 1] == i {
                format!("duplicate index {i} (entries {} and {k})", k - 1)
            } else {
                format!(
                    "indices not increasing at entry {k} ({} then {i})",
                    indices[k - 1]
                )
            }));
        }
    }
    Ok(())
}

/// `dense[indices]`, widened to f64.
pub fn gather(dense: &[f32], indices: &[u32]) -> Result<Vec<f64>> {
    indices
        .iter()
        .map(|&i| {
            dense.get(i as usize).map(|&v| v as f64).ok_or_else(|| {
                Error::Coo(format!("index {i} out of range for {} values", dense.len()))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_indices() {
        let ok = Coo::new(vec![2, 3], vec![0, 2, 5], vec![1.0, 2.0, 3.0]).unwrap();
        assert_eq!(ok.complement(), vec![1, 3, 4]);
        let e = Coo::new(vec![2, 3], vec![0, 6], vec![1.0, 2.0]).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        let e = Coo::new(vec![2, 3], vec![1, 1], vec![1.0, 2.0]).unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
        let e = Coo::new(vec![2, 3], vec![3, 1], vec![1.0, 2.0]).unwrap_err();
        assert!(e.to_string().contains("not increasing"), "{e}");
        let e = Coo::new(vec![2, 3], vec![1], vec![1.0, 2.0]).unwrap_err();
        assert!(e.to_string().contains("1 indices but 2 values"), "{e}");
    }

    #[test]
    fn scatter_and_gather_are_inverse() {
        let dense = vec![0.5f32, -1.0, 2.0, 3.5];
        let idx = vec![1, 3];
        let coo = Coo::new(vec![4], idx.clone(), gather(&dense, &idx).unwrap()).unwrap();
        let mut out = vec![0.0f32; 4];
        coo.scatter_into(&mut out).unwrap();
        assert_eq!(out, vec![0.0, -1.0, 0.0, 3.5]);
    }
}
