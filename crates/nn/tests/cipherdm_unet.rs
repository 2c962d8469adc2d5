//! The U-Net against CipherDM's own flax implementation: `eps.out` of the shipped test vectors
//! (tests/data/cipherdm-mnist/cases.safetensors), and the loader's errors on bad weight files.

use std::path::PathBuf;

use nn::unet::{one_hot, UNet, UNetConfig};
use nn::weights::{FlaxParams, Recording, TensorFile};
use nn::{Backend, Error, Plain, PlainTensor};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn config() -> UNetConfig {
    #[derive(serde::Deserialize)]
    struct File {
        unet: UNetConfig,
    }
    let text = std::fs::read_to_string(repo().join("models/cipherdm-mnist/config.toml")).unwrap();
    toml::from_str::<File>(&text).unwrap().unet
}

fn weights() -> PathBuf {
    repo().join("models/cipherdm-mnist/weights.safetensors")
}

/// A reference tensor in NHWC, returned as NCHW.
fn nchw(cases: &TensorFile, name: &str) -> PlainTensor {
    let (shape, data) = cases.f32(name).unwrap();
    let x = PlainTensor::new(&shape, data).unwrap();
    Plain.permute(&x, &[0, 3, 1, 2]).unwrap()
}

#[test]
fn predicted_noise_matches_cipherdm_within_1e_4() {
    let b = Plain;
    let cases =
        TensorFile::open(repo().join("tests/data/cipherdm-mnist/cases.safetensors")).unwrap();
    let mut src = Recording::new(FlaxParams::open(weights()).unwrap());
    let unet = UNet::load(&b, &config(), &mut src).unwrap();
    // The whole file is used, and the reference README's parameter count holds.
    let (flax, records) = src.into_parts();
    assert!(
        flax.unused().is_empty(),
        "unused tensors: {:?}",
        flax.unused()
    );
    assert_eq!(records.len(), 196);
    assert_eq!(records.iter().map(|r| r.numel()).sum::<usize>(), 15_881);

    let x = nchw(&cases, "eps.x");
    let t: Vec<usize> = cases
        .i64("eps.t")
        .unwrap()
        .1
        .iter()
        .map(|&t| t as usize)
        .collect();
    let y: Vec<usize> = cases
        .i64("eps.y")
        .unwrap()
        .1
        .iter()
        .map(|&y| y as usize)
        .collect();
    let want = nchw(&cases, "eps.out");
    let onehot = b.public(&[y.len(), 2], &one_hot(&y, 2).unwrap()).unwrap();
    let got = unet.forward(&b, &x, &t, Some(&onehot)).unwrap();
    let err = got.max_abs_diff(&want).unwrap();
    eprintln!("eps.out max abs error {err:e}");
    assert!(err < 1e-4, "max abs error {err}");

    // Batch 1 gives the same answer as the batch (no cross-talk between samples).
    let x0 = b.narrow(&x, 0, 0, 1).unwrap();
    let y0 = b.narrow(&onehot, 0, 0, 1).unwrap();
    let got0 = unet.forward(&b, &x0, &t[..1], Some(&y0)).unwrap();
    assert!(
        got0.max_abs_diff(&b.narrow(&want, 0, 0, 1).unwrap())
            .unwrap()
            < 1e-4
    );
}

#[test]
fn forward_rejects_bad_inputs() {
    let b = Plain;
    let unet = UNet::load(&b, &config(), &mut FlaxParams::open(weights()).unwrap()).unwrap();
    let x = PlainTensor::zeros(&[1, 1, 28, 28]).unwrap();
    let y = PlainTensor::new(&[1, 2], vec![1.0, 0.0]).unwrap();
    assert!(unet.forward(&b, &x, &[1], Some(&y)).is_ok());
    assert!(unet.forward(&b, &x, &[1], None).is_err());
    assert!(unet.forward(&b, &x, &[1, 2], Some(&y)).is_err());
    let odd = PlainTensor::zeros(&[1, 1, 27, 28]).unwrap();
    assert!(matches!(
        unet.forward(&b, &odd, &[1], Some(&y)),
        Err(Error::Shape { .. })
    ));
    let wrong_labels = PlainTensor::zeros(&[1, 3]).unwrap();
    assert!(unet.forward(&b, &x, &[1], Some(&wrong_labels)).is_err());
}

#[test]
fn loader_names_the_problem() {
    let b = Plain;
    let dir = tempfile::tempdir().unwrap();
    let original = TensorFile::open(weights()).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = original
        .shapes()
        .into_keys()
        .map(|name| {
            let (shape, data) = original.f32(&name).unwrap();
            (name, shape, data)
        })
        .collect();
    let write = |name: &str,
                 keep: &dyn Fn(&str) -> bool,
                 reshape: &dyn Fn(&str, &[usize]) -> Vec<usize>| {
        let kept: Vec<(&str, Vec<usize>, &[f32])> = tensors
            .iter()
            .filter(|(n, _, _)| keep(n))
            .map(|(n, s, d)| (n.as_str(), reshape(n, s), d.as_slice()))
            .collect();
        let refs: Vec<(&str, &[usize], &[f32])> = kept
            .iter()
            .map(|(n, s, d)| (*n, s.as_slice(), *d))
            .collect();
        let path = dir.path().join(name);
        nn::weights::write_f32_tensors(&path, &refs).unwrap();
        path
    };

    // A missing tensor.
    let missing = write(
        "missing.safetensors",
        &|n| n != "mid_1.Conv_0.kernel",
        &|_, s| s.to_vec(),
    );
    match UNet::load(&b, &config(), &mut FlaxParams::open(&missing).unwrap()) {
        Err(Error::MissingParam { name }) => assert_eq!(name, "mid_1.Conv_0.kernel"),
        other => panic!("expected MissingParam, got {:?}", other.err()),
    }

    // A tensor with the wrong shape (same number of values, transposed dense kernel).
    let bad_shape = write("shape.safetensors", &|_| true, &|n, s| {
        if n == "time_mlp.layers_1.kernel" {
            vec![s[1], s[0]]
        } else {
            s.to_vec()
        }
    });
    match UNet::load(&b, &config(), &mut FlaxParams::open(&bad_shape).unwrap()) {
        Err(Error::ParamShape {
            name,
            expected,
            found,
        }) => {
            assert_eq!(name, "time_mlp.layers_1.kernel");
            assert_eq!((expected, found), (vec![4, 8], vec![8, 4]));
        }
        other => panic!("expected ParamShape, got {:?}", other.err()),
    }

    // A truncated file and a file that is not safetensors at all.
    let bytes = std::fs::read(weights()).unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a weights file").unwrap();
    for path in [&truncated, &garbage, &dir.path().join("absent.safetensors")] {
        match FlaxParams::open(path) {
            Err(e @ Error::File { .. }) => {
                assert!(e.to_string().contains(&*path.to_string_lossy()))
            }
            other => panic!("expected a File error for {path:?}, got {:?}", other.err()),
        }
    }
}
