//! The `secdiff` binary end to end: `generate` reproduces CipherDM's DDIM-50 and DDPM samples
//! from a noise file, and every kind of bad input ends with a message naming the problem, a
//! non-zero exit and no output file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nn::weights::{write_f32_tensors, TensorFile};
use nn::{Backend, Plain, PlainTensor};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cases() -> TensorFile {
    TensorFile::open(repo().join("tests/data/cipherdm-mnist/cases.safetensors")).unwrap()
}

fn secdiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_secdiff"))
        .args(args)
        .env("SECDIFF_MODELS", repo().join("models"))
        .output()
        .unwrap()
}

/// Require that a `secdiff` run succeeded (its stderr is the failure message).
fn assert_succeeds(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tensor(file: &TensorFile, name: &str) -> PlainTensor {
    let (shape, data) = file.f32(name).unwrap();
    PlainTensor::new(&shape, data).unwrap()
}

fn nhwc_to_nchw(x: &PlainTensor) -> PlainTensor {
    Plain.permute(x, &[0, 3, 1, 2]).unwrap()
}

fn write(path: &Path, tensors: &[(&str, &PlainTensor)]) {
    let list: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(n, t)| (*n, t.shape(), t.data()))
        .collect();
    write_f32_tensors(path, &list).unwrap();
}

fn raw_x0(path: &Path) -> PlainTensor {
    tensor(&TensorFile::open(path).unwrap(), "x_0")
}

#[test]
fn ddim50_from_a_noise_file_matches_cipherdm() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let want = nhwc_to_nchw(&tensor(&cases, "ddim50.x_0"));
    let x_t = tensor(&cases, "ddim50.x_T");
    // The same x_T in both accepted layouts.
    for (name, x) in [("nhwc", x_t.clone()), ("nchw", nhwc_to_nchw(&x_t))] {
        let noise = dir.path().join(format!("{name}.safetensors"));
        let raw = dir.path().join(format!("{name}-x0.safetensors"));
        let png = dir.path().join(format!("{name}.png"));
        let report = dir.path().join(format!("{name}.json"));
        write(&noise, &[("x_T", &x)]);
        let out = secdiff(&[
            "generate",
            "--model",
            "cipherdm-mnist",
            "--mode",
            "plain",
            "--sampler",
            "ddim",
            "--steps",
            "50",
            "--labels",
            "0,1,1,0",
            "--noise",
            noise.to_str().unwrap(),
            "--raw-out",
            raw.to_str().unwrap(),
            "--out",
            png.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ]);
        assert_succeeds(&out);
        let got = raw_x0(&raw);
        assert_eq!(got.shape(), &[4, 1, 28, 28]);
        let err = got.max_abs_diff(&want).unwrap();
        assert!(err < 1e-3, "{name}: max abs error {err}");
        // The PNG is a 2 x 2 grid of 28 x 28 tiles with a 2-pixel gap.
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
        let info = decoder.read_info().unwrap().info().clone();
        assert_eq!((info.width, info.height), (58, 58));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(report["steps"], 50);
        assert_eq!(report["mode"], "plain");
        assert_eq!(report["labels"], serde_json::json!([0, 1, 1, 0]));
    }
}

#[test]
fn ddpm_with_file_noise_matches_cipherdm() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let noise = dir.path().join("ddpm.safetensors");
    let raw = dir.path().join("x0.safetensors");
    // NHWC x_T and (T, N, H, W, C) step noise, labels from the file's `y`.
    let y = cases.i64("ddpm.y").unwrap().1;
    let (x_t, steps) = (tensor(&cases, "ddpm.x_T"), tensor(&cases, "ddpm.noise"));
    write(&noise, &[("x_T", &x_t), ("noise", &steps)]);
    let out = secdiff(&[
        "generate",
        "--sampler",
        "ddpm",
        "--labels",
        &y[0].to_string(),
        "--noise",
        noise.to_str().unwrap(),
        "--raw-out",
        raw.to_str().unwrap(),
    ]);
    assert_succeeds(&out);
    let err = raw_x0(&raw)
        .max_abs_diff(&nhwc_to_nchw(&tensor(&cases, "ddpm.x_0")))
        .unwrap();
    assert!(err < 1e-2, "max abs error {err}");
}

/// Runs `generate` with `args` plus --out/--raw-out in a fresh directory and checks that it
/// fails with `expected` in its message and leaves no output file.
fn assert_fails(dir: &Path, args: &[&str], expected: &str) {
    let png = dir.join("fail.png");
    let raw = dir.join("fail.safetensors");
    let mut all = vec!["generate"];
    all.extend_from_slice(args);
    all.extend([
        "--out",
        png.to_str().unwrap(),
        "--raw-out",
        raw.to_str().unwrap(),
    ]);
    let out = secdiff(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(
        stderr.contains(expected),
        "{args:?}: `{expected}` not in: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert!(
        !png.exists() && !raw.exists(),
        "{args:?} left an output file"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{args:?} left temporary files");
}

/// A copy of the shipped model directory whose weights file is `weights` (None: no file).
fn model_copy(root: &Path, name: &str, weights: Option<&[u8]>) -> String {
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(
        repo().join("models/cipherdm-mnist/config.toml"),
        dir.join("config.toml"),
    )
    .unwrap();
    if let Some(bytes) = weights {
        std::fs::write(dir.join("weights.safetensors"), bytes).unwrap();
    }
    dir.to_str().unwrap().to_string()
}

/// The shipped weights with `edit` applied to (name, shape) of every tensor.
fn edited_weights(edit: impl Fn(&str, &[usize]) -> (String, Vec<usize>)) -> Vec<u8> {
    let file = TensorFile::open(repo().join("models/cipherdm-mnist/weights.safetensors")).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = file
        .shapes()
        .into_iter()
        .map(|(name, shape)| {
            let (new_name, new_shape) = edit(&name, &shape);
            (new_name, new_shape, file.f32(&name).unwrap().1)
        })
        .collect();
    let list: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice()))
        .collect();
    nn::weights::f32_tensors_to_bytes(&list).unwrap()
}

#[test]
fn bad_models_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_fails(
        d,
        &["--model", "no-such-model", "--labels", "0"],
        "unknown model `no-such-model`",
    );
    let missing = model_copy(d, "missing", None);
    assert_fails(
        d,
        &["--model", &missing, "--labels", "0"],
        "weights.safetensors",
    );
    let corrupt = model_copy(
        d,
        "corrupt",
        Some(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":"),
    );
    assert_fails(
        d,
        &["--model", &corrupt, "--labels", "0"],
        "not a valid safetensors file",
    );
    let bytes = std::fs::read(repo().join("models/cipherdm-mnist/weights.safetensors")).unwrap();
    let truncated = model_copy(d, "truncated", Some(&bytes[..bytes.len() - 100]));
    assert_fails(
        d,
        &["--model", &truncated, "--labels", "0"],
        "not a valid safetensors file",
    );
    let renamed = model_copy(
        d,
        "renamed",
        Some(&edited_weights(|n, s| {
            let n = if n == "out_conv.kernel" {
                "out_conv.weight"
            } else {
                n
            };
            (n.to_string(), s.to_vec())
        })),
    );
    assert_fails(
        d,
        &["--model", &renamed, "--labels", "0"],
        "missing parameter `out_conv.kernel`",
    );
    let reshaped = model_copy(
        d,
        "reshaped",
        Some(&edited_weights(|n, s| {
            let s = if n == "downs_0.Dense_0.kernel" {
                vec![s[1], s[0]]
            } else {
                s.to_vec()
            };
            (n.to_string(), s)
        })),
    );
    assert_fails(
        d,
        &["--model", &reshaped, "--labels", "0"],
        "`downs_0.Dense_0.kernel` has shape",
    );
}

#[test]
fn bad_requests_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_fails(
        d,
        &["--labels", "0,2"],
        "label 2 is outside the model's 2 classes",
    );
    assert_fails(d, &["--labels", "0,-1"], "label -1 is outside");
    assert_fails(d, &["--labels", "0,x"], "`x` is not an integer label");
    assert_fails(d, &["--model", "cipherdm-mnist"], "give --labels");
    assert_fails(
        d,
        &["--labels", "0", "--steps", "0"],
        "cannot sample with 0 steps",
    );
    assert_fails(
        d,
        &["--labels", "0", "--steps", "1000"],
        "cannot sample with 1000 steps",
    );
    assert_fails(
        d,
        &["--labels", "0", "--steps", "5000"],
        "cannot sample with 5000 steps",
    );
    assert_fails(
        d,
        &["--labels", "0", "--sampler", "ddpm", "--steps", "50"],
        "DDPM takes every one",
    );
    assert_fails(d, &["--labels", "0", "--eta=-1"], "eta must be");
    let nowhere = d.join("no/such/dir/x.png");
    let out = secdiff(&[
        "generate",
        "--labels",
        "0",
        "--out",
        nowhere.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn bad_noise_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = cases();
    let x_t = tensor(&cases, "ddim50.x_T");
    let file = |name: &str, tensors: &[(&str, &PlainTensor)]| {
        let p = d.join(name);
        write(&p, tensors);
        p.to_str().unwrap().to_string()
    };
    // Four images for three labels.
    let four = file("four.safetensors", &[("x_T", &x_t)]);
    assert_fails(d, &["--labels", "0,1,1", "--noise", &four], "with N = 3");
    // 27 x 28 images.
    let odd = Plain.narrow(&x_t, 1, 0, 27).unwrap();
    let odd = file("odd.safetensors", &[("x_T", &odd)]);
    assert_fails(
        d,
        &["--labels", "0,1,1,0", "--noise", &odd],
        "`x_T` has shape [4, 27, 28, 1]",
    );
    // No x_T at all.
    let none = file("none.safetensors", &[("z", &x_t)]);
    assert_fails(
        d,
        &["--labels", "0,1,1,0", "--noise", &none],
        "missing parameter `x_T`",
    );
    // Step noise for the wrong number of timesteps.
    let short = PlainTensor::zeros(&[10, 4, 28, 28, 1]).unwrap();
    let short = file("short.safetensors", &[("x_T", &x_t), ("noise", &short)]);
    assert_fails(
        d,
        &["--labels", "0,1,1,0", "--noise", &short],
        "`noise` has 10 steps",
    );
    // Not a safetensors file; a file that does not exist.
    let junk = d.join("junk.safetensors");
    std::fs::write(&junk, "junk").unwrap();
    assert_fails(
        d,
        &["--labels", "0", "--noise", junk.to_str().unwrap()],
        "junk.safetensors",
    );
    let absent = d.join("absent.safetensors");
    assert_fails(
        d,
        &["--labels", "0", "--noise", absent.to_str().unwrap()],
        "absent.safetensors",
    );
}

#[test]
fn info_prints_the_parameter_count() {
    let out = Command::new(env!("CARGO_BIN_EXE_secdiff"))
        .args(["info", "--model", "cipherdm-mnist"])
        .env("SECDIFF_MODELS", repo().join("models"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("parameters: 15881 in 196 tensors"), "{text}");
    let bad = secdiff(&["info", "--model", "nope"]);
    assert!(!bad.status.success());
}

#[test]
fn mnist_sd_is_the_default_and_labels_still_mean_cipherdm_mnist() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let run = secdiff(&[
        "generate",
        "--prompt",
        "3",
        "--steps",
        "2",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_succeeds(&run);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(
        json["model"].as_str().unwrap().ends_with("mnist-sd"),
        "{json}"
    );
    // No prompt at all: unconditional digits from the default model.
    let raw = dir.path().join("x0.safetensors");
    let run = secdiff(&[
        "generate",
        "--steps",
        "2",
        "--raw-out",
        raw.to_str().unwrap(),
    ]);
    assert_succeeds(&run);
    assert_eq!(raw_x0(&raw).shape().to_vec(), vec![1, 1, 28, 28]);
    // --labels without --model: CipherDM's label-conditional model, as before.
    let run = secdiff(&[
        "generate",
        "--labels",
        "0,1",
        "--steps",
        "2",
        "--raw-out",
        raw.to_str().unwrap(),
    ]);
    assert_succeeds(&run);
    assert_eq!(raw_x0(&raw).shape().to_vec(), vec![2, 1, 28, 28]);
}
