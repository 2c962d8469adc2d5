//! A small MNIST CNN, written against the same `Backend`, whose accuracy on generated digits and
//! whose penultimate features (for FID) score the diffusion model's samples.

use serde::{Deserialize, Serialize};

use crate::layers::Naming::Diffusers;
use crate::layers::{Conv2d, Linear};
use crate::{Backend, ConvSpec, Padding, ParamSource, Result};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Output channels of the three 3x3 convs (the last two have stride 2: 28 -> 14 -> 7).
    pub channels: [usize; 3],
    /// Width of the penultimate layer: the features FID is computed on.
    pub features: usize,
    pub classes: usize,
    pub image_size: usize,
}

pub struct MnistClassifier<B: Backend> {
    convs: [Conv2d<B>; 3],
    fc1: Linear<B>,
    fc2: Linear<B>,
    flat: usize,
}

impl<B: Backend> MnistClassifier<B> {
    pub fn new(backend: &B, src: &mut dyn ParamSource<B>, c: &ClassifierConfig) -> Result<Self> {
        if !c.image_size.is_multiple_of(4)
            || c.channels.contains(&0)
            || c.features == 0
            || c.classes == 0
        {
            return Err(crate::Error::Config(format!(
                "classifier: image_size must be a multiple of 4 and widths positive, got {c:?}"
            )));
        }
        let pad = ConvSpec {
            stride: 1,
            padding: Padding::symmetric(1),
        };
        let down = ConvSpec {
            stride: 2,
            padding: Padding::symmetric(1),
        };
        let [a, bb, cc] = c.channels;
        let side = c.image_size / 4;
        let flat = cc * side * side;
        Ok(MnistClassifier {
            convs: [
                Conv2d::load(backend, src, Diffusers, "conv1", (1, a), 3, pad)?,
                Conv2d::load(backend, src, Diffusers, "conv2", (a, bb), 3, down)?,
                Conv2d::load(backend, src, Diffusers, "conv3", (bb, cc), 3, down)?,
            ],
            fc1: Linear::load(backend, src, Diffusers, "fc1", (flat, c.features), true)?,
            fc2: Linear::load(
                backend,
                src,
                Diffusers,
                "fc2",
                (c.features, c.classes),
                true,
            )?,
            flat,
        })
    }

    /// Penultimate features (N, features) of images (N, 1, H, W) in [-1, 1].
    pub fn features(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let mut h = x.clone();
        for conv in &self.convs {
            h = b.silu(&conv.forward(b, &h)?)?;
        }
        let n = b.shape(&h)[0];
        let h = b.reshape(&h, &[n, self.flat])?;
        b.silu(&self.fc1.forward(b, &h)?)
    }

    /// Class logits from penultimate features.
    pub fn logits_from_features(&self, b: &B, f: &B::Tensor) -> Result<B::Tensor> {
        self.fc2.forward(b, f)
    }

    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        self.logits_from_features(b, &self.features(b, x)?)
    }
}
