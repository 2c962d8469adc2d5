//! Trainable parameters: a [`ParamSource`] that hands the model fresh (or loaded) `Var`s and
//! remembers them by name, AdamW with decoupled weight decay, an exponential moving average of
//! the weights, and checkpoints that hold all three so a run resumes where it stopped.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{backprop::GradStore, Tensor, Var};
use nn::sd::weights::{save_atomic, NamedTensor, WeightsFile};
use nn::{ParamSource, Result};
use rand::{Rng, SeedableRng};

use crate::backend::{ce, values, Candle};

/// The parameters of one model part, in the order the model asked for them.
pub struct Params {
    pub entries: Vec<(String, Var)>,
    rng: rand::rngs::StdRng,
}

impl Params {
    pub fn new(seed: u64) -> Self {
        Params {
            entries: vec![],
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    pub fn vars(&self) -> Vec<Var> {
        self.entries.iter().map(|(_, v)| v.clone()).collect()
    }

    pub fn count(&self) -> usize {
        self.entries.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// (name, shape, values) of the current weights, for saving.
    pub fn snapshot(&self) -> Result<Vec<NamedTensor>> {
        self.entries
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.dims().to_vec(), values(v.as_tensor())?)))
            .collect()
    }

    /// PyTorch's default initialisation (uniform in +-1/sqrt(fan_in)) for conv and dense
    /// kernels, N(0, 0.02) for embedding tables, ones for norm scales, zeros for biases.
    fn init(&mut self, name: &str, shape: &[usize]) -> Vec<f32> {
        let n: usize = shape.iter().product();
        if name.ends_with("embedding.weight") {
            return (0..n).map(|_| 0.02 * normal(&mut self.rng)).collect();
        }
        if name.ends_with("weight") && shape.len() >= 2 {
            // Dense kernels are (in, out); conv kernels (out, in, kh, kw).
            let fan_in = if shape.len() == 2 {
                shape[0]
            } else {
                shape[1..].iter().product()
            };
            let bound = 1.0 / (fan_in as f32).sqrt();
            return (0..n)
                .map(|_| self.rng.random_range(-bound..bound))
                .collect();
        }
        if name.ends_with("weight") {
            return vec![1.0; n];
        }
        vec![0.0; n]
    }
}

impl ParamSource<Candle> for Params {
    fn param(&mut self, backend: &Candle, name: &str, shape: &[usize]) -> Result<Var> {
        if self.entries.iter().any(|(n, _)| n == name) {
            return Err(nn::Error::Config(format!(
                "parameter `{name}` requested twice"
            )));
        }
        let data = self.init(name, shape);
        let var = Var::from_slice(&data, shape, &backend.device).map_err(ce)?;
        self.entries.push((name.to_string(), var.clone()));
        Ok(var)
    }
}

/// A standard normal sample (Box-Muller), so noise depends only on our seeded generator.
pub fn normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// AdamW (Loshchilov & Hutter) with global-norm gradient clipping. Weight decay skips biases,
/// norm scales and embedding tables.
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub clip_norm: f64,
    pub step: usize,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl AdamW {
    pub fn new(params: &Params, weight_decay: f64, clip_norm: f64) -> Result<Self> {
        let zeros = |p: &Var| p.as_tensor().zeros_like().map_err(ce);
        Ok(AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            clip_norm,
            step: 0,
            m: params
                .entries
                .iter()
                .map(|(_, p)| zeros(p))
                .collect::<Result<_>>()?,
            v: params
                .entries
                .iter()
                .map(|(_, p)| zeros(p))
                .collect::<Result<_>>()?,
        })
    }

    /// One update at learning rate `lr`; returns the gradient norm before clipping.
    pub fn update(&mut self, params: &Params, grads: &GradStore, lr: f64) -> Result<f64> {
        let mut sq = 0.0f64;
        for (_, p) in &params.entries {
            if let Some(g) = grads.get(p.as_tensor()) {
                sq += g
                    .sqr()
                    .and_then(|s| s.sum_all()?.to_scalar::<f32>())
                    .map_err(ce)? as f64;
            }
        }
        let norm = sq.sqrt();
        if !norm.is_finite() {
            return Err(nn::Error::Config(format!(
                "gradient norm is {norm} at step {}: lower the learning rate",
                self.step
            )));
        }
        let clip = if norm > self.clip_norm {
            self.clip_norm / norm
        } else {
            1.0
        };
        self.step += 1;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t));
        for (i, (name, p)) in params.entries.iter().enumerate() {
            let Some(g) = grads.get(p.as_tensor()) else {
                continue;
            };
            // Gradients record the ops that made them; without detaching, the moments would keep
            // every step's whole graph (and its activations) alive.
            let g = g.detach();
            let decays = p.rank() >= 2 && !name.ends_with("embedding.weight");
            let run = || -> candle_core::Result<(Tensor, Tensor, Tensor)> {
                let g = (&g * clip)?;
                let m = ((&self.m[i] * self.beta1)? + (&g * (1.0 - self.beta1))?)?;
                let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
                let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + self.eps)?)?;
                let mut w = p.as_tensor().clone();
                if decays {
                    w = (w * (1.0 - lr * self.weight_decay))?;
                }
                Ok(((w - (update * lr)?)?, m, v))
            };
            let (w, m, v) = run().map_err(ce)?;
            p.set(&w).map_err(ce)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(norm)
    }
}

/// The exponential moving average of the weights, the weights that are shipped. Its decay warms
/// up as `min(decay, (1 + n) / (10 + n))` so that early averages do not remember the random init.
pub struct Ema {
    pub decay: f64,
    pub shadow: Vec<Tensor>,
}

impl Ema {
    pub fn new(params: &Params, decay: f64) -> Result<Self> {
        Ok(Ema {
            decay,
            shadow: params
                .entries
                .iter()
                .map(|(_, p)| p.as_tensor().copy().map_err(ce))
                .collect::<Result<_>>()?,
        })
    }

    pub fn update(&mut self, params: &Params, step: usize) -> Result<()> {
        let d = self.decay.min((1.0 + step as f64) / (10.0 + step as f64));
        for (s, (_, p)) in self.shadow.iter_mut().zip(&params.entries) {
            *s = ((&*s * d).and_then(|a| a + (p.as_tensor() * (1.0 - d))?))
                .and_then(|t| t.detach().copy())
                .map_err(ce)?;
        }
        Ok(())
    }

    pub fn snapshot(&self, params: &Params) -> Result<Vec<NamedTensor>> {
        self.shadow
            .iter()
            .zip(&params.entries)
            .map(|(s, (n, _))| Ok((n.clone(), s.dims().to_vec(), values(s)?)))
            .collect()
    }
}

/// Everything a resumed run needs: weights, EMA, optimizer moments and the step.
pub fn save_checkpoint(path: &Path, params: &Params, ema: &Ema, opt: &AdamW) -> Result<()> {
    let mut all = vec![];
    for (i, (name, p)) in params.entries.iter().enumerate() {
        let shape = p.dims().to_vec();
        all.push((
            format!("param/{name}"),
            shape.clone(),
            values(p.as_tensor())?,
        ));
        all.push((
            format!("ema/{name}"),
            shape.clone(),
            values(&ema.shadow[i])?,
        ));
        all.push((format!("adam_m/{name}"), shape.clone(), values(&opt.m[i])?));
        all.push((format!("adam_v/{name}"), shape, values(&opt.v[i])?));
    }
    let meta = HashMap::from([("step".to_string(), opt.step.to_string())]);
    save_atomic(path, &all, meta)
}

/// Restores a checkpoint written by [`save_checkpoint`] for the same model.
pub fn load_checkpoint(path: &Path, params: &Params, ema: &mut Ema, opt: &mut AdamW) -> Result<()> {
    let file = WeightsFile::load(path)?;
    let bad = |detail: String| nn::Error::File {
        path: path.display().to_string(),
        detail,
    };
    let step: usize = file
        .metadata
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("checkpoint has no `step` metadata".into()))?;
    let get = |key: String, shape: &[usize]| -> Result<Tensor> {
        let (fshape, data) = file
            .tensors
            .get(&key)
            .ok_or_else(|| bad(format!("checkpoint lacks `{key}`: a different model?")))?;
        let data = nn::sd::weights::to_internal(&key, fshape, data.clone(), shape)?;
        Tensor::from_slice(&data, shape, &candle_core::Device::Cpu).map_err(ce)
    };
    for (i, (name, p)) in params.entries.iter().enumerate() {
        let shape = p.dims().to_vec();
        p.set(&get(format!("param/{name}"), &shape)?).map_err(ce)?;
        ema.shadow[i] = get(format!("ema/{name}"), &shape)?;
        opt.m[i] = get(format!("adam_m/{name}"), &shape)?;
        opt.v[i] = get(format!("adam_v/{name}"), &shape)?;
    }
    opt.step = step;
    Ok(())
}
