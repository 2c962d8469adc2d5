//! Each part trains for a few steps on a small slice of the data and its loss falls; resuming
//! continues a run; bad configs and data files get errors that name the problem. Tiny widths keep
//! every test to seconds.

use std::path::{Path, PathBuf};

use train::{autoencoder, classifier, unet, TrainConfig};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const MODEL: &str = r#"
image_size = 28
[vae]
in_channels = 1
out_channels = 1
block_out_channels = [8, 8]
layers_per_block = 1
latent_channels = 4
norm_num_groups = 4
[unet]
in_channels = 4
out_channels = 4
sample_size = 14
down_block_types = ["CrossAttnDownBlock2D", "DownBlock2D"]
up_block_types = ["UpBlock2D", "CrossAttnUpBlock2D"]
block_out_channels = [8, 16]
layers_per_block = 1
cross_attention_dim = 16
attention_head_dim = 2
norm_num_groups = 4
[text_encoder]
vocab_size = 32
hidden_size = 16
intermediate_size = 32
num_hidden_layers = 1
num_attention_heads = 2
max_position_embeddings = 8
hidden_act = "gelu"
[scheduler]
num_train_timesteps = 1000
beta_start = 0.00085
beta_end = 0.012
beta_schedule = "scaled_linear"
[classifier]
channels = [4, 8, 8]
features = 16
classes = 10
image_size = 28
"#;

fn train_toml(data: &Path, steps: usize) -> String {
    format!(
        r#"
data = "{}"
model_config = "config.toml"
seed = 3
train_rows = 256
[autoencoder]
steps = {steps}
batch_size = 8
lr = 3e-3
warmup = 5
kl_weight = 1e-4
checkpoint_every = 10
[unet]
steps = {steps}
batch_size = 8
lr = 3e-3
warmup = 5
empty_prompt_fraction = 0.1
checkpoint_every = 10
preview_per_digit = 0
[classifier]
steps = {steps}
batch_size = 16
lr = 1e-2
warmup = 5
checkpoint_every = 10
"#,
        data.display()
    )
}

/// A fresh directory with the tiny model's config, the shipped vocabulary and a train.toml.
fn setup(name: &str, steps: usize) -> (PathBuf, TrainConfig) {
    let dir = std::env::temp_dir().join(format!("secdiff-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), MODEL).unwrap();
    std::fs::copy(
        repo().join("models/mnist-sd/vocab.txt"),
        dir.join("vocab.txt"),
    )
    .unwrap();
    let data = repo().join("data/mnist10k/mnist10k.safetensors");
    std::fs::write(dir.join("train.toml"), train_toml(&data, steps)).unwrap();
    let cfg = TrainConfig::from_file(&dir.join("train.toml")).unwrap();
    (dir, cfg)
}

#[test]
fn autoencoder_then_unet_losses_fall() {
    let (dir, cfg) = setup("sd", 40);
    let ae = autoencoder::train(&cfg, &dir, false).unwrap();
    assert_eq!(ae.steps, 40);
    assert!(ae.final_loss < 0.8 * ae.first_loss, "autoencoder {ae:?}");
    assert!(dir.join("vae.safetensors").exists());
    assert!(dir.join("samples/vae_reconstruction.png").exists());
    let un = unet::train(&cfg, &dir, false).unwrap();
    assert!(un.final_loss < un.first_loss, "unet {un:?}");
    for f in [
        "unet.safetensors",
        "text_encoder.safetensors",
        "checkpoints/unet.ckpt.safetensors",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    // No temporary files are left behind by the atomic writes.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn classifier_loss_falls_and_a_run_resumes() {
    let (dir, cfg) = setup("cls", 30);
    let (report, acc) = classifier::train(&cfg, &dir, false).unwrap();
    assert!(report.final_loss < 0.9 * report.first_loss, "{report:?}");
    assert!(acc > 0.2, "held-out accuracy after 30 steps: {acc}");
    // Continue the same run to 40 steps: it starts from the checkpoint at step 30. Rows a crashed
    // run logged after its last checkpoint are dropped, not duplicated.
    let log_path = dir.join("train-logs/classifier.csv");
    let mut log = std::fs::read_to_string(&log_path).unwrap();
    log.push_str("31,9.9,1e-3,1.0,1.0\n");
    std::fs::write(&log_path, log).unwrap();
    let mut longer = cfg.clone();
    longer.classifier.steps = 40;
    let (resumed, _) = classifier::train(&longer, &dir, true).unwrap();
    assert_eq!(resumed.steps, 40);
    let log = std::fs::read_to_string(dir.join("train-logs/classifier.csv")).unwrap();
    let steps: Vec<usize> = log
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(steps, (1..=40).collect::<Vec<_>>());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_configs_and_data_are_named() {
    let (dir, _) = setup("bad", 10);
    let text = std::fs::read_to_string(dir.join("train.toml")).unwrap();
    std::fs::write(
        dir.join("zero.toml"),
        text.replacen("steps = 10", "steps = 0", 1),
    )
    .unwrap();
    let err = TrainConfig::from_file(&dir.join("zero.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[autoencoder]"), "{err}");
    std::fs::write(
        dir.join("typo.toml"),
        text.replace("kl_weight", "kl_wieght"),
    )
    .unwrap();
    let err = TrainConfig::from_file(&dir.join("typo.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("kl_wieght") && err.contains("typo.toml"),
        "{err}"
    );

    std::fs::write(dir.join("garbage.safetensors"), [7u8; 100]).unwrap();
    let mut cfg = TrainConfig::from_file(&dir.join("train.toml")).unwrap();
    cfg.data = dir.join("garbage.safetensors");
    let err = classifier::train(&cfg, &dir, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("garbage.safetensors"), "{err}");
    // The U-Net needs the VAE trained first, and says which file is missing.
    let cfg = TrainConfig::from_file(&dir.join("train.toml")).unwrap();
    let err = unet::train(&cfg, &dir, false).unwrap_err().to_string();
    assert!(err.contains("vae.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
