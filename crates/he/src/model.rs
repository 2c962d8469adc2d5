//! The U-Net on both sides of the HE protocol: the client's head (stem and the first down blocks,
//! [`UNetHead`]) and the server's tail ([`UNetServer`]), both on the plaintext backend, cut at a
//! [`SplitPoint`] named after the layer it follows ("init_conv", "downs_0", "downs_1", ...).

use std::path::Path;
use std::sync::Arc;

use diffusion::{ModelDir, Schedule};
use nn::unet::{one_hot, SplitPoint, UNet};
use nn::{Plain, PlainTensor};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::protocol::{ClientModel, ServerModel, SessionInfo, Tensor};

/// Largest batch a server accepts in one session.
pub const MAX_BATCH: usize = 256;

/// A model directory loaded for HE mode.
pub struct LoadedModel {
    pub dir: ModelDir,
    pub unet: UNet<Plain>,
    pub schedule: Schedule,
    /// SHA-256 of the weights file: client and server must run the same weights.
    pub weights_sha256: String,
}

impl LoadedModel {
    pub fn load(name_or_dir: &str) -> Result<Arc<LoadedModel>> {
        let dir = diffusion::resolve_model(name_or_dir)?;
        let unet = dir.load_plain_unet()?;
        let schedule = dir.schedule()?;
        let weights_sha256 = file_sha256(&dir.weights_path())?;
        Ok(Arc::new(LoadedModel {
            dir,
            unet,
            schedule,
            weights_sha256,
        }))
    }

    pub fn name(&self) -> &str {
        &self.dir.name
    }

    /// The split point called `name` ("init_conv", "downs_K", or its index).
    pub fn split_point(&self, name: &str) -> Result<SplitPoint> {
        let points = self.unet.split_points();
        let found = points
            .iter()
            .copied()
            .find(|&p| split_name(p) == name || p.down_blocks.to_string() == name);
        found.ok_or_else(|| {
            Error::Other(format!(
                "unknown split point `{name}` for model {} (known: {})",
                self.name(),
                points
                    .iter()
                    .map(|&p| split_name(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// A session for `labels` at `split`, latent of the model's image shape.
    pub fn session(&self, split: SplitPoint, labels: &[usize], batch: usize) -> SessionInfo {
        let [c, h, w] = self.dir.image_shape();
        SessionInfo {
            model: self.name().to_string(),
            weights_sha256: self.weights_sha256.clone(),
            split: split_name(split),
            latent_shape: vec![batch, c, h, w],
            labels: labels.to_vec(),
        }
    }

    fn labels_tensor(&self, labels: &[usize]) -> Result<Option<PlainTensor>> {
        match self.dir.config.unet.num_classes {
            Some(k) => {
                let hot = one_hot(labels, k).ok_or_else(|| {
                    Error::Other(format!("labels {labels:?} outside the model's {k} classes"))
                })?;
                Ok(Some(PlainTensor::new(&[labels.len(), k], hot)?))
            }
            None => Ok(None),
        }
    }
}

/// The name of a split point: the layer it comes right after.
pub fn split_name(p: SplitPoint) -> String {
    match p.down_blocks {
        0 => "init_conv".to_string(),
        k => format!("downs_{}", k - 1),
    }
}

fn file_sha256(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Other(format!("{}: cannot read: {e}", path.display())))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The client's head of the U-Net.
pub struct UNetHead {
    model: Arc<LoadedModel>,
    session: SessionInfo,
    split: SplitPoint,
    labels: Option<PlainTensor>,
}

impl UNetHead {
    pub fn new(model: Arc<LoadedModel>, session: SessionInfo) -> Result<UNetHead> {
        let split = model.split_point(&session.split)?;
        let labels = model.labels_tensor(&session.labels)?;
        Ok(UNetHead {
            model,
            session,
            split,
            labels,
        })
    }

    pub fn split(&self) -> SplitPoint {
        self.split
    }
}

impl ClientModel for UNetHead {
    fn session(&self) -> &SessionInfo {
        &self.session
    }

    fn features(&self, x: &[f32], t: usize) -> Result<Vec<Tensor>> {
        let shape = &self.session.latent_shape;
        let x = PlainTensor::new(shape, x.to_vec())?;
        let acts = self.model.unet.forward_head(
            &Plain,
            &x,
            &vec![t; shape[0]],
            self.labels.as_ref(),
            self.split,
        )?;
        acts.into_iter()
            .map(|a| Tensor::new(a.shape().to_vec(), a.into_vec()))
            .collect()
    }
}

/// The server's side: the tails of the models it serves.
pub struct UNetServer {
    models: Vec<Arc<LoadedModel>>,
}

impl UNetServer {
    pub fn new(models: Vec<Arc<LoadedModel>>) -> UNetServer {
        UNetServer { models }
    }

    fn model(&self, session: &SessionInfo) -> Result<&Arc<LoadedModel>> {
        self.models
            .iter()
            .find(|m| m.name() == session.model)
            .ok_or_else(|| {
                Error::Other(format!(
                    "this server does not serve model `{}` (it serves: {})",
                    session.model,
                    self.models
                        .iter()
                        .map(|m| m.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }
}

impl ServerModel for UNetServer {
    fn check(&self, s: &SessionInfo) -> Result<()> {
        let model = self.model(s)?;
        if s.weights_sha256 != model.weights_sha256 {
            return Err(Error::Other(format!(
                "model `{}`: the client's weights (sha256 {}..) differ from the server's ({}..)",
                s.model,
                &s.weights_sha256.get(..12).unwrap_or(&s.weights_sha256),
                &model.weights_sha256[..12]
            )));
        }
        model.split_point(&s.split)?;
        let [c, h, w] = model.dir.image_shape();
        let n = s.latent_shape.first().copied().unwrap_or(0);
        if s.latent_shape != [n, c, h, w] || n == 0 || n > MAX_BATCH {
            return Err(Error::shape(
                "session",
                format!(
                    "latent {:?}; model {} takes (N, {c}, {h}, {w}) with 1 <= N <= {MAX_BATCH}",
                    s.latent_shape, s.model
                ),
            ));
        }
        let conditional = model.dir.config.unet.num_classes.is_some();
        if conditional && s.labels.len() != n {
            return Err(Error::Other(format!(
                "{} labels for a batch of {n}",
                s.labels.len()
            )));
        }
        if !conditional && !s.labels.is_empty() {
            return Err(Error::Other(format!(
                "model {} is unconditional: no labels allowed",
                s.model
            )));
        }
        model.labels_tensor(&s.labels)?;
        Ok(())
    }

    fn eps(&self, s: &SessionInfo, features: &[Tensor], t: usize) -> Result<Vec<f32>> {
        let model = self.model(s)?;
        if t >= model.schedule.len() {
            return Err(Error::Other(format!(
                "timestep {t} outside the model's {} timesteps",
                model.schedule.len()
            )));
        }
        let split = model.split_point(&s.split)?;
        let acts = features
            .iter()
            .map(|f| PlainTensor::new(&f.shape, f.data.clone()))
            .collect::<nn::Result<Vec<_>>>()?;
        let n = s.latent_shape[0];
        let labels = model.labels_tensor(&s.labels)?;
        let eps = model
            .unet
            .forward_tail(&Plain, acts, &vec![t; n], labels.as_ref(), split)?;
        if eps.shape() != s.latent_shape.as_slice() {
            return Err(Error::shape(
                "server U-Net",
                format!(
                    "noise of shape {:?} for latent {:?}",
                    eps.shape(),
                    s.latent_shape
                ),
            ));
        }
        Ok(eps.into_vec())
    }
}
