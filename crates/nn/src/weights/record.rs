//! Parameter sources that observe a model's construction: `Recording` wraps another source and
//! lists the names and shapes asked for (architecture summaries, parameter counts); `ZeroParams`
//! hands out zeros (building a model without weights, e.g. to count its parameters).

use crate::plain::{Plain, PlainTensor};
use crate::{Backend, ParamSource, Result};

/// One parameter a model asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamRecord {
    pub name: String,
    /// Internal layout.
    pub shape: Vec<usize>,
}

impl ParamRecord {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

pub struct Recording<S> {
    inner: S,
    records: Vec<ParamRecord>,
}

impl<S> Recording<S> {
    pub fn new(inner: S) -> Self {
        Recording {
            inner,
            records: Vec::new(),
        }
    }

    pub fn records(&self) -> &[ParamRecord] {
        &self.records
    }

    pub fn parameter_count(&self) -> usize {
        self.records.iter().map(ParamRecord::numel).sum()
    }

    pub fn into_parts(self) -> (S, Vec<ParamRecord>) {
        (self.inner, self.records)
    }
}

impl<B: Backend, S: ParamSource<B>> ParamSource<B> for Recording<S> {
    fn param(&mut self, backend: &B, name: &str, shape: &[usize]) -> Result<B::Param> {
        let p = self.inner.param(backend, name, shape)?;
        self.records.push(ParamRecord {
            name: name.to_string(),
            shape: shape.to_vec(),
        });
        Ok(p)
    }
}

/// Zero-valued parameters of whatever shape is asked for.
#[derive(Clone, Copy, Debug, Default)]
pub struct ZeroParams;

impl ParamSource<Plain> for ZeroParams {
    fn param(&mut self, _backend: &Plain, _name: &str, shape: &[usize]) -> Result<PlainTensor> {
        PlainTensor::zeros(shape)
    }
}
