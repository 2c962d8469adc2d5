//! A model directory: `config.toml` (architecture, schedule, weights file) next to its weights,
//! and how a model name is found (`models/<name>/` of the repository, or `$SECDIFF_MODELS`).

use std::path::{Path, PathBuf};

use nn::unet::{UNet, UNetConfig};
use nn::weights::FlaxParams;
use nn::Plain;
use serde::Deserialize;

use crate::{BetaSchedule, Error, Result, Schedule};

/// Parameter names and layouts of a weights file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightsLayout {
    /// flax paths; HWIO conv kernels, (in, out) dense kernels.
    Flax,
}

/// The `[model]` table.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMeta {
    /// Weights file, relative to the model directory.
    pub weights: String,
    pub layout: WeightsLayout,
    /// Height and width of the generated images.
    pub image_size: [usize; 2],
}

/// A whole config.toml.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub model: ModelMeta,
    pub unet: UNetConfig,
    pub schedule: BetaSchedule,
}

/// An opened, validated model directory.
#[derive(Clone, Debug)]
pub struct ModelDir {
    pub name: String,
    pub dir: PathBuf,
    pub config: ModelConfig,
}

impl ModelDir {
    pub fn open(dir: impl AsRef<Path>) -> Result<ModelDir> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join("config.toml");
        let config_error = |detail: String| Error::Config {
            path: path.display().to_string(),
            detail,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| config_error(e.to_string()))?;
        let config: ModelConfig = toml::from_str(&text).map_err(|e| config_error(e.to_string()))?;
        config
            .unet
            .validate()
            .map_err(|e| config_error(e.to_string()))?;
        let [h, w] = config.model.image_size;
        let multiple = config.unet.size_multiple();
        if h == 0 || w == 0 || h % multiple != 0 || w % multiple != 0 {
            return Err(config_error(format!(
                "image_size {h}x{w} must be positive multiples of {multiple}"
            )));
        }
        config
            .schedule
            .build()
            .map_err(|e| config_error(e.to_string()))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        Ok(ModelDir { name, dir, config })
    }

    pub fn weights_path(&self) -> PathBuf {
        self.dir.join(&self.config.model.weights)
    }

    pub fn schedule(&self) -> Result<Schedule> {
        self.config.schedule.build()
    }

    /// The parameter source for this model's weights file.
    pub fn flax_params(&self) -> Result<FlaxParams> {
        match self.config.model.layout {
            WeightsLayout::Flax => Ok(FlaxParams::open(self.weights_path())?),
        }
    }

    /// The U-Net on the plaintext backend, every tensor of the weights file checked against the
    /// config (a tensor the model does not use is an error too: it means a config mismatch).
    pub fn load_plain_unet(&self) -> Result<UNet<Plain>> {
        let mut params = self.flax_params()?;
        let unet = UNet::load(&Plain, &self.config.unet, &mut params)?;
        let unused = params.unused();
        if !unused.is_empty() {
            return Err(nn::Error::File {
                path: self.weights_path().display().to_string(),
                detail: format!(
                    "{} tensor(s) that the config's model does not use, e.g. `{}`",
                    unused.len(),
                    unused[0]
                ),
            }
            .into());
        }
        Ok(unet)
    }

    /// (C, H, W) of one generated image.
    pub fn image_shape(&self) -> [usize; 3] {
        let [h, w] = self.config.model.image_size;
        [self.config.unet.img_channels, h, w]
    }
}

/// Where model names are looked up: `$SECDIFF_MODELS` if set, else the repository's `models/`
/// (found from the executable's location, `<repo>/target/<profile>/secdiff`, or from this
/// crate's source location for `cargo run`/tests).
pub fn models_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("SECDIFF_MODELS") {
        return PathBuf::from(dir);
    }
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .skip(1)
            .take(4)
            .map(|dir| dir.join("models"))
            .find(|dir| dir.is_dir())
    });
    from_exe.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"))
}

/// Opens `name_or_dir`: a directory path (anything containing a path separator, or an existing
/// directory with a config.toml), else a model name under [`models_root`].
pub fn resolve_model(name_or_dir: &str) -> Result<ModelDir> {
    let as_path = Path::new(name_or_dir);
    if name_or_dir.contains(std::path::MAIN_SEPARATOR) || as_path.join("config.toml").is_file() {
        return ModelDir::open(as_path);
    }
    let root = models_root();
    let dir = root.join(name_or_dir);
    if !dir.join("config.toml").is_file() || name_or_dir.is_empty() {
        return Err(Error::UnknownModel {
            name: name_or_dir.to_string(),
            searched: root.display().to_string(),
        });
    }
    ModelDir::open(dir)
}
