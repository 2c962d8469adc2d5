//! The MNIST digits the project trains and evaluates on (`data/mnist10k/mnist10k.safetensors`:
//! `images` u8 (N, 28, 28), `labels` u8 (N,)). The last [`HELD_OUT`] rows are for evaluation only.

use crate::{Error, Result};

/// Rows at the end of the file that training never sees.
pub const HELD_OUT: usize = 2000;
pub const SIDE: usize = 28;

#[derive(Clone, Debug)]
pub struct Digits {
    /// (N, 1, 28, 28) row-major, scaled to [-1, 1] (0 = background -> -1).
    pub images: Vec<f32>,
    pub labels: Vec<u8>,
}

impl Digits {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i * SIDE * SIDE..(i + 1) * SIDE * SIDE]
    }

    /// Rows `range` as a new set.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Digits {
        Digits {
            images: self.images[range.start * SIDE * SIDE..range.end * SIDE * SIDE].to_vec(),
            labels: self.labels[range].to_vec(),
        }
    }

    /// Reads and checks the whole file.
    pub fn load(path: &std::path::Path) -> Result<Digits> {
        let err = |detail: String| Error::File {
            path: path.display().to_string(),
            detail,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
        let get = |name: &str| {
            st.tensor(name)
                .map_err(|_| err(format!("no tensor `{name}`")))
                .and_then(|t| {
                    if t.dtype() != safetensors::Dtype::U8 {
                        Err(err(format!("`{name}` is {:?}, expected U8", t.dtype())))
                    } else {
                        Ok(t)
                    }
                })
        };
        let images = get("images")?;
        let labels = get("labels")?;
        let n = labels.shape().first().copied().unwrap_or(0);
        if labels.shape() != [n] || images.shape() != [n, SIDE, SIDE] || n == 0 {
            return Err(err(format!(
                "expected images (N, 28, 28) and labels (N,), got {:?} and {:?}",
                images.shape(),
                labels.shape()
            )));
        }
        if let Some(bad) = labels.data().iter().find(|&&l| l > 9) {
            return Err(err(format!("label {bad} is not a digit")));
        }
        Ok(Digits {
            images: images
                .data()
                .iter()
                .map(|&p| p as f32 / 127.5 - 1.0)
                .collect(),
            labels: labels.data().to_vec(),
        })
    }

    /// (training rows, held-out rows): the last `HELD_OUT` rows are held out.
    pub fn split(self) -> Result<(Digits, Digits)> {
        if self.len() <= HELD_OUT {
            return Err(Error::Config(format!(
                "{} digits leave nothing to train on after holding out {HELD_OUT}",
                self.len()
            )));
        }
        let cut = self.len() - HELD_OUT;
        Ok((self.slice(0..cut), self.slice(cut..self.len())))
    }
}
