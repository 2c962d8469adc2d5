//! Weights in diffusers' layout: safetensors files whose linear weights are (out, in) and conv
//! kernels (out, in, kh, kw). Converts them to the internal layout on load (dense kernels (in,
//! out)) and back on save, so that our own models and SD v1.5's files go through one loader.
//!
//! The rule: a 2-D tensor named `*.weight` is a PyTorch `Linear` weight and is transposed, except
//! embedding tables (`*embedding.weight`), which are already (vocab, dim) = (in, out) for one-hot
//! rows. Old VAE checkpoints store attention projections as 1x1 convs; those are squeezed.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::{Backend, Error, ParamSource, Result};

fn is_linear_weight(name: &str, shape: &[usize]) -> bool {
    shape.len() == 2 && name.ends_with(".weight") && !name.ends_with("embedding.weight")
}

fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// A tensor in the file's layout converted to the internal `want` shape.
pub fn to_internal(
    name: &str,
    file_shape: &[usize],
    data: Vec<f32>,
    want: &[usize],
) -> Result<Vec<f32>> {
    let mismatch = || Error::ParamShape {
        name: name.to_string(),
        expected: want.to_vec(),
        found: file_shape.to_vec(),
    };
    if is_linear_weight(name, want) {
        let (i, o) = (want[0], want[1]);
        let squeezed_conv = file_shape.len() == 4 && file_shape[2..] == [1, 1];
        if file_shape == [o, i] || (squeezed_conv && file_shape[..2] == [o, i]) {
            return Ok(transpose(&data, o, i));
        }
        return Err(mismatch());
    }
    if file_shape != want {
        return Err(mismatch());
    }
    Ok(data)
}

/// The file-layout shape of a parameter with internal shape `shape`.
pub fn file_shape(name: &str, shape: &[usize]) -> Vec<usize> {
    if is_linear_weight(name, shape) {
        vec![shape[1], shape[0]]
    } else {
        shape.to_vec()
    }
}

/// A tensor in the internal layout converted to the file's layout: (shape, data).
pub fn to_file(name: &str, shape: &[usize], data: &[f32]) -> (Vec<usize>, Vec<f32>) {
    if is_linear_weight(name, shape) {
        (
            vec![shape[1], shape[0]],
            transpose(data, shape[0], shape[1]),
        )
    } else {
        (shape.to_vec(), data.to_vec())
    }
}

/// A named tensor in the internal layout: (name, shape, values).
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// The tensors of one safetensors file, decoded to f32 (F32, F16 and BF16 are accepted).
pub struct WeightsFile {
    pub path: String,
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub metadata: HashMap<String, String>,
}

impl WeightsFile {
    pub fn load(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let err = |detail: String| Error::File {
            path: shown.clone(),
            detail,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                safetensors::Dtype::F32 => raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                safetensors::Dtype::F16 => raw
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                safetensors::Dtype::BF16 => raw
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                other => {
                    return Err(err(format!(
                        "tensor `{name}` has unsupported dtype {other:?}"
                    )))
                }
            };
            tensors.insert(name, (view.shape().to_vec(), data));
        }
        Ok(WeightsFile {
            path: shown,
            tensors,
            metadata: meta.metadata().clone().unwrap_or_default(),
        })
    }

    /// Parameters for a model, made by `make` (the backend's way to hold a weight).
    pub fn source<B, F>(&self, make: F) -> FileSource<'_, F>
    where
        B: Backend,
        F: FnMut(&B, &[usize], Vec<f32>) -> Result<B::Param>,
    {
        FileSource {
            file: self,
            make,
            used: HashSet::new(),
        }
    }
}

/// A [`ParamSource`] over a [`WeightsFile`] in diffusers' layout.
pub struct FileSource<'a, F> {
    file: &'a WeightsFile,
    make: F,
    used: HashSet<String>,
}

impl<F> FileSource<'_, F> {
    /// Tensors in the file that the model never asked for (a sign of a wrong config).
    pub fn unused(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .file
            .tensors
            .keys()
            .filter(|k| !self.used.contains(*k))
            .cloned()
            .collect();
        v.sort();
        v
    }
}

impl<B, F> ParamSource<B> for FileSource<'_, F>
where
    B: Backend,
    F: FnMut(&B, &[usize], Vec<f32>) -> Result<B::Param>,
{
    fn param(&mut self, backend: &B, name: &str, shape: &[usize]) -> Result<B::Param> {
        let (fshape, data) = self
            .file
            .tensors
            .get(name)
            .ok_or_else(|| Error::MissingParam {
                name: format!("{name} (in {})", self.file.path),
            })?;
        let data = to_internal(name, fshape, data.clone(), shape)?;
        self.used.insert(name.to_string());
        (self.make)(backend, shape, data)
    }
}

/// Writes tensors given in the internal layout as a diffusers-layout F32 safetensors file,
/// atomically: a temporary file next to `path`, then a rename, so a crash leaves either the old
/// file or the new one.
pub fn save_atomic(
    path: &Path,
    tensors: &[NamedTensor],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let err = |detail: String| Error::File {
        path: path.display().to_string(),
        detail,
    };
    let converted: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let (s, d) = to_file(name, shape, data);
            (
                name.clone(),
                s,
                d.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = converted
        .iter()
        .map(|(n, s, d)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                .map(|v| (n.clone(), v))
                .map_err(|e| err(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| err(e.to_string()))?;
    write_atomic(path, &bytes)
}

pub use crate::weights::write_atomic;
