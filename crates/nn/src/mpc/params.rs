//! The parameters of a model at one party, as received from the model owner: a map from the
//! parameter's name to its shares (or public value), handed to the model code through
//! `ParamSource`. The model asks for each name with the shape it expects, so weights shared for
//! a different architecture are refused by name and shape.

use std::collections::{BTreeMap, BTreeSet};

use super::{Mpc, MpcParam};
use crate::{Error, ParamSource, Result};

#[derive(Default)]
pub struct SharedParams {
    params: BTreeMap<String, MpcParam>,
    used: BTreeSet<String>,
}

impl SharedParams {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a parameter; a name given twice is an error (the owner sent it twice).
    pub fn insert(&mut self, name: &str, p: MpcParam) -> Result<()> {
        if self.params.insert(name.to_string(), p).is_some() {
            return Err(Error::Config(format!("parameter `{name}` was sent twice")));
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// The parameters by name (what a model owner sends).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MpcParam)> {
        self.params.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Parameters no model call asked for (the owner's weights do not fit the architecture).
    pub fn unused(&self) -> Vec<String> {
        self.params
            .keys()
            .filter(|k| !self.used.contains(*k))
            .cloned()
            .collect()
    }
}

impl ParamSource<Mpc<'_>> for SharedParams {
    fn param(&mut self, _b: &Mpc<'_>, name: &str, shape: &[usize]) -> Result<MpcParam> {
        let p = self.params.get(name).ok_or_else(|| Error::MissingParam {
            name: name.to_string(),
        })?;
        if p.shape() != shape {
            return Err(Error::ParamShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: p.shape().to_vec(),
            });
        }
        self.used.insert(name.to_string());
        Ok(p.clone())
    }
}
