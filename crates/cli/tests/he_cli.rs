//! `secdiff generate --mode he` end to end: from CipherDM's reference x_T it agrees with
//! `--mode plain --no-clip` within 1e-2, and bad HE input ends with a clear message, a non-zero
//! exit and no output file. (The server-side and protocol failures are tested in the he crate.)
#![cfg(feature = "he")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nn::weights::{write_f32_tensors, TensorFile};
use nn::PlainTensor;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn secdiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_secdiff"))
        .args(args)
        .env("SECDIFF_MODELS", repo().join("models"))
        .output()
        .unwrap()
}

fn x0(path: &Path) -> PlainTensor {
    let (shape, data) = TensorFile::open(path).unwrap().f32("x_0").unwrap();
    PlainTensor::new(&shape, data).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn he_mode_matches_plain_mode_from_the_same_x_t() {
    let dir = tempfile::tempdir().unwrap();
    let cases =
        TensorFile::open(repo().join("tests/data/cipherdm-mnist/cases.safetensors")).unwrap();
    let (shape, data) = cases.f32("ddim50.x_T").unwrap();
    let noise = dir.path().join("x_T.safetensors");
    write_f32_tensors(&noise, &[("x_T", &shape, &data)]).unwrap();
    let run = |mode: &str, extra: &[&str]| -> PlainTensor {
        let raw = dir.path().join(format!("{mode}.safetensors"));
        let mut args = vec![
            "generate",
            "--mode",
            mode,
            "--labels",
            "0,1,1,0",
            "--noise",
            noise.to_str().unwrap(),
            "--raw-out",
            raw.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = secdiff(&args);
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
        x0(&raw)
    };
    let plain = run("plain", &["--no-clip"]);
    let he = run("he", &["--local"]);
    let err = he.max_abs_diff(&plain).unwrap();
    assert!(err < 1e-2, "max |he - plain| = {err}");
}

#[test]
fn bad_he_input_is_a_clear_error_without_output() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("x.png");
    let png_arg = png.to_str().unwrap();
    // A port nothing listens on: bind one, note it, close it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let cases: [(&[&str], &str); 5] = [
        (&["--mode", "he"], "--server ADDR"),
        (&["--mode", "he", "--server", &closed], "cannot connect"),
        (
            &["--mode", "he", "--local", "--split", "ups_0"],
            "unknown split point `ups_0`",
        ),
        (
            &["--mode", "he", "--local", "--preset", "tiny"],
            "unknown CKKS preset `tiny`",
        ),
        (&["--mode", "plain", "--local"], "are for --mode he"),
    ];
    for (extra, needle) in cases {
        let mut args = vec![
            "generate", "--labels", "0", "--steps", "2", "--out", png_arg,
        ];
        args.extend_from_slice(extra);
        let out = secdiff(&args);
        assert!(!out.status.success(), "{extra:?} succeeded");
        assert!(stderr(&out).contains(needle), "{extra:?}: {}", stderr(&out));
        assert!(!png.exists(), "{extra:?} wrote an output");
    }
}

#[test]
fn audit_writes_its_table_json_and_strip() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("audit.json");
    let png = dir.path().join("audit.png");
    let out = secdiff(&[
        "audit",
        "he",
        "--labels",
        "1",
        "--steps",
        "3",
        "--splits",
        "init_conv",
        "--thresholds",
        "0.01,0.2",
        "--json",
        json.to_str().unwrap(),
        "--png",
        png.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let records = records.as_array().unwrap();
    // features, plaintext part at 0.01, noise rollout; plaintext part at 0.2.
    assert_eq!(records.len(), 4);
    let features = &records[0];
    assert_eq!(features["source"], "features (all sent)");
    assert!(features["psnr_x_t"].as_f64().unwrap() > 40.0, "{features}");
    assert!(features["ssim_x_0"].as_f64().unwrap() > 0.99, "{features}");
    let plain_small = records[1]["plain_fraction"].as_f64().unwrap();
    let plain_large = records[3]["plain_fraction"].as_f64().unwrap();
    assert!(plain_small < plain_large, "{plain_small} vs {plain_large}");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let info = decoder.read_info().unwrap().info().clone();
    // 7 tiles of 28 with 2-pixel gaps, one row.
    assert_eq!((info.width, info.height), (7 * 30 + 2, 32));

    let bad = secdiff(&["audit", "he", "--splits", "ups_1", "--steps", "2"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("unknown split point `ups_1`"),
        "{}",
        stderr(&bad)
    );
}
