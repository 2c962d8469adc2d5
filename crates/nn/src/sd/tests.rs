//! Checks of the module structure against Stable Diffusion v1.5 at full size: parameter names,
//! shapes and counts, without allocating a single weight.

use std::collections::BTreeMap;

use super::config::{AutoencoderKLConfig, ClipTextConfig, UNet2DConditionConfig};
use super::{AutoencoderKL, ClipTextTransformer, UNet2DConditionModel, VaeParts};
use crate::{Backend, ConvSpec, Error, ParamSource, Result};

/// A backend whose parameters are only shapes: enough to build a model, not to run it.
struct ShapesOnly;

fn nope<T>() -> Result<T> {
    Err(Error::Config("ShapesOnly computes nothing".into()))
}

impl Backend for ShapesOnly {
    type Tensor = Vec<usize>;
    type Param = Vec<usize>;
    fn name(&self) -> &'static str {
        "shapes"
    }
    fn shape(&self, x: &Vec<usize>) -> Vec<usize> {
        x.clone()
    }
    fn param_shape(&self, p: &Vec<usize>) -> Vec<usize> {
        p.clone()
    }
    fn public(&self, _: &[usize], _: &[f32]) -> Result<Vec<usize>> {
        nope()
    }
    fn param_tensor(&self, _: &Vec<usize>) -> Result<Vec<usize>> {
        nope()
    }
    fn reshape(&self, _: &Vec<usize>, _: &[usize]) -> Result<Vec<usize>> {
        nope()
    }
    fn permute(&self, _: &Vec<usize>, _: &[usize]) -> Result<Vec<usize>> {
        nope()
    }
    fn concat(&self, _: &[&Vec<usize>], _: usize) -> Result<Vec<usize>> {
        nope()
    }
    fn narrow(&self, _: &Vec<usize>, _: usize, _: usize, _: usize) -> Result<Vec<usize>> {
        nope()
    }
    fn upsample_nearest2d(&self, _: &Vec<usize>, _: usize) -> Result<Vec<usize>> {
        nope()
    }
    fn add(&self, _: &Vec<usize>, _: &Vec<usize>) -> Result<Vec<usize>> {
        nope()
    }
    fn sub(&self, _: &Vec<usize>, _: &Vec<usize>) -> Result<Vec<usize>> {
        nope()
    }
    fn scale(&self, _: &Vec<usize>, _: f32) -> Result<Vec<usize>> {
        nope()
    }
    fn add_scalar(&self, _: &Vec<usize>, _: f32) -> Result<Vec<usize>> {
        nope()
    }
    fn mul(&self, _: &Vec<usize>, _: &Vec<usize>) -> Result<Vec<usize>> {
        nope()
    }
    fn matmul(&self, _: &Vec<usize>, _: &Vec<usize>) -> Result<Vec<usize>> {
        nope()
    }
    fn linear(&self, _: &Vec<usize>, _: &Vec<usize>, _: Option<&Vec<usize>>) -> Result<Vec<usize>> {
        nope()
    }
    fn conv2d(
        &self,
        _: &Vec<usize>,
        _: &Vec<usize>,
        _: Option<&Vec<usize>>,
        _: ConvSpec,
    ) -> Result<Vec<usize>> {
        nope()
    }
    fn conv_transpose2d(
        &self,
        _: &Vec<usize>,
        _: &Vec<usize>,
        _: Option<&Vec<usize>>,
        _: ConvSpec,
    ) -> Result<Vec<usize>> {
        nope()
    }
    fn silu(&self, _: &Vec<usize>) -> Result<Vec<usize>> {
        nope()
    }
    fn mish(&self, _: &Vec<usize>) -> Result<Vec<usize>> {
        nope()
    }
    fn gelu(&self, _: &Vec<usize>) -> Result<Vec<usize>> {
        nope()
    }
    fn softmax(&self, _: &Vec<usize>) -> Result<Vec<usize>> {
        nope()
    }
    fn clamp(&self, _: &Vec<usize>, _: f32, _: f32) -> Result<Vec<usize>> {
        nope()
    }
    fn group_norm(
        &self,
        _: &Vec<usize>,
        _: usize,
        _: &Vec<usize>,
        _: &Vec<usize>,
        _: f32,
    ) -> Result<Vec<usize>> {
        nope()
    }
    fn layer_norm(
        &self,
        _: &Vec<usize>,
        _: &Vec<usize>,
        _: &Vec<usize>,
        _: f32,
    ) -> Result<Vec<usize>> {
        nope()
    }
}

/// Records every requested parameter's name and shape, in diffusers' file layout.
#[derive(Default)]
struct Record(BTreeMap<String, Vec<usize>>);

impl ParamSource<ShapesOnly> for Record {
    fn param(&mut self, _: &ShapesOnly, name: &str, shape: &[usize]) -> Result<Vec<usize>> {
        let file_shape = super::weights::file_shape(name, shape);
        assert!(
            self.0.insert(name.to_string(), file_shape).is_none(),
            "{name} twice"
        );
        Ok(shape.to_vec())
    }
}

impl Record {
    fn count(&self) -> usize {
        self.0.values().map(|s| s.iter().product::<usize>()).sum()
    }
    fn shape(&self, name: &str) -> &[usize] {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("no parameter {name}"))
    }
}

#[test]
fn sd_v1_5_unet_has_diffusers_names_shapes_and_count() {
    let mut rec = Record::default();
    UNet2DConditionModel::new(&ShapesOnly, &mut rec, "", &UNet2DConditionConfig::sd_v1_5())
        .unwrap();
    // Shapes as in diffusers' `unet/diffusion_pytorch_model.safetensors` (PyTorch layout).
    let expect: [(&str, &[usize]); 10] = [
        ("conv_in.weight", &[320, 4, 3, 3]),
        ("time_embedding.linear_1.weight", &[1280, 320]),
        (
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
            &[320, 320],
        ),
        (
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            &[320, 768],
        ),
        (
            "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
            &[2560, 320],
        ),
        (
            "down_blocks.1.resnets.0.conv_shortcut.weight",
            &[640, 320, 1, 1],
        ),
        ("mid_block.attentions.0.proj_in.weight", &[1280, 1280, 1, 1]),
        ("up_blocks.0.resnets.0.conv1.weight", &[1280, 2560, 3, 3]),
        (
            "up_blocks.3.resnets.2.conv_shortcut.weight",
            &[320, 640, 1, 1],
        ),
        ("conv_out.weight", &[4, 320, 3, 3]),
    ];
    for (name, shape) in expect {
        assert_eq!(rec.shape(name), shape, "{name}");
    }
    assert!(!rec
        .0
        .contains_key("down_blocks.3.downsamplers.0.conv.weight"));
    assert!(!rec
        .0
        .contains_key("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.bias"));
    assert_eq!(rec.0.len(), 686);
    assert_eq!(rec.count(), 859_520_964);
}

#[test]
fn sd_v1_5_vae_and_text_encoder_counts() {
    let mut rec = Record::default();
    AutoencoderKL::new(
        &ShapesOnly,
        &mut rec,
        "",
        &AutoencoderKLConfig::sd_v1_5(),
        VaeParts::Both,
    )
    .unwrap();
    assert_eq!(
        rec.shape("encoder.mid_block.attentions.0.to_q.weight"),
        [512, 512]
    );
    assert_eq!(
        rec.shape("decoder.up_blocks.3.resnets.0.conv_shortcut.weight"),
        [128, 256, 1, 1]
    );
    assert_eq!(rec.shape("quant_conv.weight"), [8, 8, 1, 1]);
    assert_eq!(rec.count(), 83_653_863);

    let mut rec = Record::default();
    ClipTextTransformer::new(
        &ShapesOnly,
        &mut rec,
        "text_model",
        &ClipTextConfig::sd_v1_5(),
    )
    .unwrap();
    assert_eq!(
        rec.shape("text_model.embeddings.token_embedding.weight"),
        [49408, 768]
    );
    assert_eq!(
        rec.shape("text_model.encoder.layers.11.mlp.fc1.weight"),
        [3072, 768]
    );
    assert_eq!(rec.count(), 123_060_480);
}

fn repo_file(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

#[test]
fn shipped_vocabulary_is_the_templates_vocabulary() {
    let text = std::fs::read_to_string(repo_file("models/mnist-sd/vocab.txt")).unwrap();
    let words: Vec<String> = text.lines().map(str::to_string).collect();
    assert_eq!(words, super::tokenizer::template_vocabulary());
}

#[test]
fn shipped_config_is_valid_and_bad_configs_are_named() {
    let cfg =
        super::StableDiffusionConfig::from_file(&repo_file("models/mnist-sd/config.toml")).unwrap();
    assert_eq!(cfg.latent_size(), 7);
    assert_eq!(cfg.vae.latent_channels, 4);
    let text = std::fs::read_to_string(repo_file("models/mnist-sd/config.toml")).unwrap();
    let typo = text.replace("layers_per_block", "layers_per_blok");
    let err = super::StableDiffusionConfig::from_toml_str(&typo, "x.toml").unwrap_err();
    assert!(err.to_string().contains("layers_per_blok"), "{err}");
    let bad = text.replace("cross_attention_dim = 32", "cross_attention_dim = 48");
    let err = super::StableDiffusionConfig::from_toml_str(&bad, "x.toml").unwrap_err();
    assert!(err.to_string().contains("cross_attention_dim"), "{err}");
    let bad = text.replace(
        "\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\"",
        "\"CrossAttnDownBlock2D\", \"Bogus\"",
    );
    assert!(super::StableDiffusionConfig::from_toml_str(&bad, "x.toml").is_err());
}

#[test]
fn mnist_file_errors_name_the_problem() {
    let dir = std::env::temp_dir().join(format!("sd-mnist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"not a tensor file at all").unwrap();
    let err = super::mnist::Digits::load(&garbage)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("garbage.safetensors") && err.contains("safetensors"),
        "{err}"
    );
    let missing = super::mnist::Digits::load(&dir.join("absent.safetensors")).unwrap_err();
    assert!(missing.to_string().contains("absent.safetensors"));
    let digits =
        super::mnist::Digits::load(&repo_file("data/mnist10k/mnist10k.safetensors")).unwrap();
    let (train, held) = digits.split().unwrap();
    assert_eq!((train.len(), held.len()), (8000, 2000));
    std::fs::remove_dir_all(&dir).unwrap();
}
