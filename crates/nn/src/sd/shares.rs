//! The model owner's side of a text-to-image model under MPC: every parameter of the text
//! encoder, the U-Net and the VAE decoder, as each model asks for it (internal layout), encoded
//! in fixed point and dealt into replicated shares, one [`SdShares`] per party. A party builds
//! its models from its `SdShares` alone (`diffusion::TextToImage::from_sources`).

use mpc::deal_values;
use rand::RngCore;
use ring::FixedPoint;

use super::autoencoder_kl::{AutoencoderKL, VaeParts};
use super::clip_text::ClipTextTransformer;
use super::model_files::ModelFiles;
use super::unet_2d_condition::UNet2DConditionModel;
use super::weights::WeightsFile;
use crate::mpc::{MpcParam, SharedParams};
use crate::weights::Recording;
use crate::{Error, ParamSource, Plain, PlainTensor, Result};

/// One party's shares of the three models (separate sources: the U-Net's and the VAE's names
/// overlap).
pub struct SdShares {
    pub text_encoder: SharedParams,
    pub unet: SharedParams,
    pub vae: SharedParams,
}

/// The prefix of the text encoder's names in its weights file (diffusers' layout).
pub const TEXT_ENCODER_PREFIX: &str = "text_model";

/// Deals every parameter of `files`' three models (the VAE's decoder half) into shares with
/// `frac_bits` fractional bits.
pub fn deal_model_files(
    files: &ModelFiles,
    frac_bits: u32,
    rng: &mut impl RngCore,
) -> Result<[SdShares; 3]> {
    let c = &files.config;
    let fp = FixedPoint::new(frac_bits);
    let text = deal_one(&files.text_encoder, &fp, rng, |src| {
        ClipTextTransformer::new(&Plain, src, TEXT_ENCODER_PREFIX, &c.text_encoder).map(|_| ())
    })?;
    let unet = deal_one(&files.unet, &fp, rng, |src| {
        UNet2DConditionModel::new(&Plain, src, "", &c.unet).map(|_| ())
    })?;
    let vae = deal_one(&files.vae, &fp, rng, |src| {
        AutoencoderKL::new(&Plain, src, "", &c.vae, VaeParts::DecoderOnly).map(|_| ())
    })?;
    let mut out = text
        .into_iter()
        .zip(unet)
        .zip(vae)
        .map(|((text_encoder, unet), vae)| SdShares {
            text_encoder,
            unet,
            vae,
        });
    Ok([(); 3].map(|_| out.next().expect("three parties")))
}

/// One model's parameters, recorded while `build` constructs it on `Plain`, dealt into shares.
fn deal_one(
    file: &WeightsFile,
    fp: &FixedPoint,
    rng: &mut impl RngCore,
    build: impl FnOnce(&mut dyn ParamSource<Plain>) -> Result<()>,
) -> Result<[SharedParams; 3]> {
    let mut values: Vec<Vec<f32>> = Vec::new();
    let records = {
        let mut src = Recording::new(file.source(|_: &Plain, shape: &[usize], data: Vec<f32>| {
            values.push(data.clone());
            PlainTensor::new(shape, data)
        }));
        build(&mut src)?;
        src.into_parts().1
    };
    let mut params = [
        SharedParams::new(),
        SharedParams::new(),
        SharedParams::new(),
    ];
    for (r, v) in records.iter().zip(&values) {
        let shares = deal_values(fp, &r.shape, v, rng)
            .map_err(|e| Error::Config(format!("parameter `{}`: {e}", r.name)))?;
        for (p, s) in shares.into_iter().enumerate() {
            params[p].insert(&r.name, MpcParam::Secret(s))?;
        }
    }
    Ok(params)
}
