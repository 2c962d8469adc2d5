//! Safetensors files: reading named tensors (with their dtype and shape checked) and writing them
//! atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, Metadata, TensorView};
use safetensors::SafeTensors;

use crate::{Error, Result};

/// A safetensors file read into memory, its header parsed and validated once.
pub struct TensorFile {
    path: PathBuf,
    bytes: Vec<u8>,
    data_start: usize,
    metadata: Metadata,
}

impl TensorFile {
    pub fn open(path: impl AsRef<Path>) -> Result<TensorFile> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|e| file_error(&path, e))?;
        let (header_len, metadata) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| file_error(&path, format!("not a valid safetensors file ({e})")))?;
        Ok(TensorFile {
            path,
            bytes,
            data_start: 8 + header_len,
            metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor's name and shape, sorted by name.
    pub fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| (name, info.shape.clone()))
            .collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.metadata.info(name).is_some()
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.metadata.info(name).map(|i| i.shape.as_slice())
    }

    fn raw(&self, name: &str) -> Result<(Dtype, &[usize], &[u8])> {
        let info = self
            .metadata
            .info(name)
            .ok_or_else(|| Error::MissingParam {
                name: name.to_string(),
            })?;
        let (start, end) = info.data_offsets;
        // read_metadata has checked that the offsets tile the data section exactly.
        let data = &self.bytes[self.data_start + start..self.data_start + end];
        Ok((info.dtype, &info.shape, data))
    }

    /// The tensor `name` as f32 values with its shape (F32 as stored; F64 rounded to f32).
    pub fn f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (dtype, shape, data) = self.raw(name)?;
        let values = match dtype {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("chunk of 8")) as f32)
                .collect(),
            other => return Err(self.dtype_error(name, other, "a float tensor (F32 or F64)")),
        };
        Ok((shape.to_vec(), values))
    }

    /// The tensor `name` as integers with its shape (any signed or unsigned integer dtype).
    pub fn i64(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let (dtype, shape, data) = self.raw(name)?;
        let values: Vec<i64> = match dtype {
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("chunk of 8")))
                .collect(),
            Dtype::I32 => data
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().expect("chunk of 4")) as i64)
                .collect(),
            Dtype::I16 => data
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]) as i64)
                .collect(),
            Dtype::U8 => data.iter().map(|&b| b as i64).collect(),
            Dtype::I8 => data.iter().map(|&b| b as i8 as i64).collect(),
            other => return Err(self.dtype_error(name, other, "an integer tensor")),
        };
        Ok((shape.to_vec(), values))
    }

    fn dtype_error(&self, name: &str, found: Dtype, wanted: &str) -> Error {
        file_error(
            &self.path,
            format!("tensor `{name}` has dtype {found:?}, expected {wanted}"),
        )
    }
}

pub(crate) fn file_error(path: &Path, detail: impl std::fmt::Display) -> Error {
    Error::File {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, then a rename, so
/// a reader never sees a half-written file and a failure leaves nothing behind.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let path = path.as_ref();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| file_error(path, "not a file path"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(file_error(path, e));
    }
    Ok(())
}

/// Serialises f32 tensors `(name, shape, values)` to safetensors bytes.
pub fn f32_tensors_to_bytes(tensors: &[(&str, &[usize], &[f32])]) -> Result<Vec<u8>> {
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, values)| {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.to_string(), shape.to_vec(), bytes)
        })
        .collect();
    let views = raw
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::shape("safetensors", format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| Error::shape("safetensors", e))
}

/// Writes f32 tensors as a safetensors file, atomically.
pub fn write_f32_tensors(
    path: impl AsRef<Path>,
    tensors: &[(&str, &[usize], &[f32])],
) -> Result<()> {
    write_atomic(path, &f32_tensors_to_bytes(tensors)?)
}
