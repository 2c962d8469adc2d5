//! The U-Net cut at a split point (HE mode: the client runs the head, the server the tail):
//! head then tail is the whole forward at every split point, and the tail refuses activations that
//! do not fit the split.

use std::path::PathBuf;

use nn::unet::{one_hot, SplitPoint, UNet, UNetConfig};
use nn::weights::FlaxParams;
use nn::{Plain, PlainTensor};

fn model() -> UNet<Plain> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    #[derive(serde::Deserialize)]
    struct File {
        unet: UNetConfig,
    }
    let text = std::fs::read_to_string(repo.join("models/cipherdm-mnist/config.toml")).unwrap();
    let config = toml::from_str::<File>(&text).unwrap().unet;
    let mut src = FlaxParams::open(repo.join("models/cipherdm-mnist/weights.safetensors")).unwrap();
    UNet::load(&Plain, &config, &mut src).unwrap()
}

#[test]
fn head_then_tail_is_the_forward_at_every_split_point() {
    let b = Plain;
    let unet = model();
    let x: Vec<f32> = (0..2 * 784)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 30.0)
        .collect();
    let x = PlainTensor::new(&[2, 1, 28, 28], x).unwrap();
    let y = PlainTensor::new(&[2, 2], one_hot(&[0, 1], 2).unwrap()).unwrap();
    let t = [700, 20];
    let whole = unet.forward(&b, &x, &t, Some(&y)).unwrap();
    let points = unet.split_points();
    // Stem, then every block of the down path (2 levels x 2 residual blocks + 1 downsample).
    assert_eq!(points.len(), 6);
    for split in points {
        let acts = unet.forward_head(&b, &x, &t, Some(&y), split).unwrap();
        assert_eq!(acts.len(), split.down_blocks + 1);
        let eps = unet.forward_tail(&b, acts, &t, Some(&y), split).unwrap();
        assert_eq!(eps.data(), whole.data(), "split {split:?}");
    }
}

#[test]
fn tail_rejects_activations_that_do_not_fit() {
    let b = Plain;
    let unet = model();
    let x = PlainTensor::new(&[1, 1, 28, 28], vec![0.1; 784]).unwrap();
    let y = PlainTensor::new(&[1, 2], one_hot(&[1], 2).unwrap()).unwrap();
    let split = SplitPoint { down_blocks: 2 };
    let acts = unet.forward_head(&b, &x, &[5], Some(&y), split).unwrap();
    // Too few activations for the split point.
    let short = acts[..2].to_vec();
    assert!(unet.forward_tail(&b, short, &[5], Some(&y), split).is_err());
    // Wrong channel count in the current activation.
    let mut wrong = acts.clone();
    wrong[2] = PlainTensor::new(&[1, 3, 28, 28], vec![0.0; 3 * 784]).unwrap();
    assert!(unet.forward_tail(&b, wrong, &[5], Some(&y), split).is_err());
    // A skip connection of the wrong spatial size (the network checks it at the concat).
    let mut small = acts.clone();
    small[0] = PlainTensor::new(&[1, 4, 14, 14], vec![0.0; 4 * 196]).unwrap();
    assert!(unet.forward_tail(&b, small, &[5], Some(&y), split).is_err());
    // A split point past the down path.
    let far = SplitPoint { down_blocks: 99 };
    assert!(unet.forward_head(&b, &x, &[5], Some(&y), far).is_err());
    assert!(unet.forward_tail(&b, acts, &[5], Some(&y), far).is_err());
}
