//! Parameters stored in flax's layout, converted to the internal layout on load.
//!
//! flax stores conv and transposed-conv kernels HWIO (kh, kw, in, out); the internal layout is
//! OIHW. Dense kernels are (in, out) in both, embedding tables (classes, dim) are used as dense
//! kernels applied to one-hot rows, and norm scales/biases are vectors: those load as stored.

use std::collections::BTreeSet;
use std::path::Path;

use super::file::TensorFile;
use crate::plain::{Plain, PlainTensor};
use crate::{Error, ParamSource, Result};

pub struct FlaxParams {
    file: TensorFile,
    used: BTreeSet<String>,
}

/// The shape a parameter of internal shape `internal` has in a flax file.
fn flax_shape(internal: &[usize]) -> Vec<usize> {
    match internal {
        &[o, i, h, w] => vec![h, w, i, o],
        other => other.to_vec(),
    }
}

impl FlaxParams {
    pub fn open(path: impl AsRef<Path>) -> Result<FlaxParams> {
        Ok(FlaxParams::new(TensorFile::open(path)?))
    }

    pub fn new(file: TensorFile) -> FlaxParams {
        FlaxParams {
            file,
            used: BTreeSet::new(),
        }
    }

    pub fn file(&self) -> &TensorFile {
        &self.file
    }

    /// The parameter `name` in the internal layout, which must have `shape` (internal layout).
    /// Backends other than `Plain` build their parameters from these values.
    pub fn values(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let expected = flax_shape(shape);
        let found = self.file.shape(name).ok_or_else(|| Error::MissingParam {
            name: name.to_string(),
        })?;
        if found != expected.as_slice() {
            return Err(Error::ParamShape {
                name: name.to_string(),
                expected,
                found: found.to_vec(),
            });
        }
        let (_, stored) = self.file.f32(name)?;
        self.used.insert(name.to_string());
        Ok(match *shape {
            [o, i, h, w] => {
                // HWIO -> OIHW.
                let mut out = vec![0.0f32; stored.len()];
                for ky in 0..h {
                    for kx in 0..w {
                        for ci in 0..i {
                            for co in 0..o {
                                out[((co * i + ci) * h + ky) * w + kx] =
                                    stored[((ky * w + kx) * i + ci) * o + co];
                            }
                        }
                    }
                }
                out
            }
            _ => stored,
        })
    }

    /// Tensors in the file that no `values`/`param` call has asked for (a mismatch between the
    /// weights and the model config shows up here).
    pub fn unused(&self) -> Vec<String> {
        self.file
            .shapes()
            .into_keys()
            .filter(|name| !self.used.contains(name))
            .collect()
    }
}

impl ParamSource<Plain> for FlaxParams {
    fn param(&mut self, _backend: &Plain, name: &str, shape: &[usize]) -> Result<PlainTensor> {
        let values = self.values(name, shape)?;
        PlainTensor::new(shape, values)
    }
}
