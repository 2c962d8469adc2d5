//! The shipped mnist-sd model end to end through the `secdiff` binary: a fixed-seed sample
//! matches the stored expected output, `eval` reports what it promises in both modes, and bad
//! arguments fail with clear messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nn::weights::TensorFile;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn secdiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_secdiff"))
        .current_dir(repo())
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn read_x0(path: &Path) -> (Vec<usize>, Vec<f32>) {
    TensorFile::open(path).unwrap().f32("x_0").unwrap()
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Regenerate the expected file (only when the shipped weights change) with:
/// `secdiff generate --model mnist-sd --prompt "a handwritten 7" --guidance 7.5 --steps 10
///  --batch 2 --seed 1 --raw-out tests/data/mnist-sd/sample_seed1.safetensors`
#[test]
fn fixed_seed_sample_matches_the_stored_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x0.safetensors");
    let run = secdiff(&[
        "generate",
        "--model",
        "mnist-sd",
        "--prompt",
        "a handwritten 7",
        "--guidance",
        "7.5",
        "--steps",
        "10",
        "--batch",
        "2",
        "--seed",
        "1",
        "--raw-out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let (shape, got) = read_x0(&out);
    let (want_shape, want) = read_x0(&repo().join("tests/data/mnist-sd/sample_seed1.safetensors"));
    assert_eq!(shape, want_shape);
    assert_eq!(shape, vec![2, 1, 28, 28]);
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-3, "max difference {diff}");
    // Not a blank image: a digit has ink and background.
    let ink = want.iter().filter(|&&v| v > 0.5).count();
    assert!(ink > 30 && ink < 400, "{ink} inked pixels");
}

fn eval(dir: &Path, mode: &str, samples: &str) -> serde_json::Value {
    let json = dir.join(format!("{mode}.json"));
    let grids = dir.join(format!("grids-{mode}"));
    let run = secdiff(&[
        "eval",
        "--model",
        "mnist-sd",
        "--mode",
        mode,
        "--samples",
        samples,
        "--steps",
        "5",
        "--batch",
        "10",
        "--grids",
        grids.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    for d in 0..10 {
        assert!(grids.join(format!("digit_{d}.png")).exists());
    }
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

#[test]
fn eval_reports_accuracy_fid_and_floor_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    let plain = eval(dir.path(), "plain", "20");
    for key in ["model", "mode", "samples", "accuracy", "fid", "fid_floor"] {
        assert!(plain.get(key).is_some(), "no `{key}` in {plain}");
    }
    assert_eq!(plain["model"], "mnist-sd");
    assert_eq!(plain["mode"], "plain");
    assert_eq!(plain["samples"], 20);
    // The shipped classifier knows real digits; its two held-out halves are close in FID, and
    // 20 generated digits (5 DDIM steps) are further from the real ones than that.
    assert!(plain["classifier_accuracy"].as_f64().unwrap() >= 0.97);
    let (fid, floor) = (
        plain["fid"].as_f64().unwrap(),
        plain["fid_floor"].as_f64().unwrap(),
    );
    assert!(floor > 0.0 && floor < fid, "fid {fid}, floor {floor}");
    assert!((0.0..=1.0).contains(&plain["accuracy"].as_f64().unwrap()));

    let approx = eval(dir.path(), "approx", "10");
    assert_eq!(approx["mode"], "approx");
    assert_eq!(approx["samples"], 10);
    assert!(approx["fid"].as_f64().unwrap().is_finite());
}

#[test]
fn bad_arguments_are_named() {
    let cases: [(&[&str], &str); 10] = [
        (&["eval", "--model", "no-such-model"], "no-such-model"),
        (
            &["eval", "--samples", "0"],
            "--samples and --batch must be positive",
        ),
        (
            &["generate", "--prompt", "seven", "--sampler", "ddpm"],
            "--model cipherdm-mnist",
        ),
        (
            &["generate", "--model", "mnist-sd", "--labels", "3"],
            "text-to-image model",
        ),
        (
            &["generate", "--prompt", "seven", "--steps", "0"],
            "cannot sample with 0 steps",
        ),
        (
            &["generate", "--prompt", "seven", "--mode", "mpc"],
            "needs --local",
        ),
        (
            &[
                "generate",
                "--prompt",
                "seven",
                "--mode",
                "mpc",
                "--local",
                "--public-weights",
            ],
            "--public-weights",
        ),
        (
            &[
                "generate",
                "--model",
                "cipherdm-mnist",
                "--labels",
                "3",
                "--sdu",
            ],
            "for text-to-image models",
        ),
        (
            &[
                "generate",
                "--prompt",
                "seven",
                "--mode",
                "mpc",
                "--parties",
                "p.toml",
                "--sdu",
            ],
            "--serve-weights",
        ),
        (
            &[
                "generate",
                "--prompt",
                "seven",
                "--sdu",
                "--sdu-refine",
                "0",
            ],
            "at least one unconditional step",
        ),
    ];
    for (args, needle) in cases {
        let out = secdiff(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("panicked"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

/// `secdiff generate --mode mpc --local --prompt "a handwritten 3" --steps 2` plus `extra`:
/// the image and the JSON report.
fn generate_on_shares(extra: &[&str]) -> ((Vec<usize>, Vec<f32>), serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let (raw, path) = (dir.path().join("x0.safetensors"), dir.path().join("r.json"));
    let mut args = vec![
        "generate",
        "--mode",
        "mpc",
        "--local",
        "--prompt",
        "a handwritten 3",
        "--steps",
        "2",
        "--raw-out",
        raw.to_str().unwrap(),
        "--report",
        path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = secdiff(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    (read_x0(&raw), report(&path))
}

/// `secdiff generate --mode mpc --local --prompt ...`: the text encoder, the guided U-Net steps
/// and the decoder on shares in three in-process parties; the report states the traffic and the
/// fidelity to the plaintext pipeline from the same noise.
#[test]
fn text_to_image_on_shares_from_the_cli() {
    let ((shape, x0), json) = generate_on_shares(&[]);
    assert_eq!(shape, vec![1, 1, 28, 28]);
    assert!(x0.iter().all(|v| (-1.0..=1.0).contains(v)));
    assert_eq!(json["mode"], "mpc", "{json}");
    assert!(json["model"].as_str().unwrap().ends_with("mnist-sd"));
    let mpc = &json["mpc"];
    assert_eq!(mpc["weights"], "secret");
    assert!(mpc["bytes_total"].as_u64().unwrap() > 100_000_000, "{mpc}");
    let diff = mpc["max_abs_diff_vs_plain"].as_f64().unwrap();
    assert!(diff < 0.05, "{diff}");
}

/// PIDM's score distillation from the CLI: in the clear it changes the image (and a zero
/// learning rate does not); on shares (`--local`: this process is the client and holds the
/// weights) the client shares one target per step and the parties' image stays close to the
/// plaintext pipeline's with the same targets.
#[test]
fn score_distillation_in_the_clear_and_on_shares() {
    let dir = tempfile::tempdir().unwrap();
    let plain = |extra: &[&str], name: &str| {
        let raw = dir.path().join(name);
        let mut args = vec![
            "generate",
            "--prompt",
            "a handwritten 5",
            "--steps",
            "4",
            "--seed",
            "3",
            "--raw-out",
            raw.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = secdiff(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        read_x0(&raw).1
    };
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    let without = plain(&[], "a.safetensors");
    let with = plain(&["--sdu"], "b.safetensors");
    let zero = plain(&["--sdu", "--sdu-eta", "0"], "c.safetensors");
    assert!(max_diff(&without, &with) > 1e-2);
    assert!(max_diff(&without, &zero) < 1e-6);

    let (_, json) = generate_on_shares(&["--sdu"]);
    assert_eq!(json["sdu"]["refine"], 5, "{json}");
    let mpc = &json["mpc"];
    // The client shares the token rows, x_T and one target per step: each party gets its two
    // components of every value, 16 bytes.
    let files = nn::sd::model_files::ModelFiles::load(&repo().join("models/mnist-sd")).unwrap();
    let c = &files.config;
    let latent = c.vae.latent_channels * c.latent_size() * c.latent_size();
    let tokens = files.tokenizer.max_len() * c.text_encoder.vocab_size;
    let shared = tokens + latent + 2 * latent;
    assert_eq!(
        mpc["bytes_client_to_parties"].as_u64().unwrap(),
        48 * shared as u64,
        "{mpc}"
    );
    let diff = mpc["max_abs_diff_vs_plain"].as_f64().unwrap();
    assert!(diff < 0.05, "{diff}");
}
