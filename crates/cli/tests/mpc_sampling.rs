//! Private sampling end to end through the `secdiff` binary: `generate --mode mpc --local`
//! against plaintext and CipherDM's own samples, three `secdiff party` processes and a
//! `secdiff owner` process over TCP against `--local`, and the failures a deployment must report
//! clearly (a dead party, shares of the wrong shape, a bad parties.toml).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nn::weights::{write_f32_tensors, TensorFile};

const EXE: &str = env!("CARGO_BIN_EXE_secdiff");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("secdiff-mpc-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cases() -> TensorFile {
    TensorFile::open(repo().join("tests/data/cipherdm-mnist/cases.safetensors")).unwrap()
}

/// A noise file with the first `n` images of the reference `ddim50.x_T` (NHWC, as stored).
fn noise_file(dir: &Path, n: usize) -> PathBuf {
    let (shape, data) = cases().f32("ddim50.x_T").unwrap();
    let per: usize = shape[1..].iter().product();
    let path = dir.join(format!("noise{n}.safetensors"));
    let mut s = shape.clone();
    s[0] = n;
    write_f32_tensors(&path, &[("x_T", &s, &data[..n * per])]).unwrap();
    path
}

fn x0(path: &Path) -> Vec<f32> {
    TensorFile::open(path).unwrap().f32("x_0").unwrap().1
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn run(args: &[&str]) -> Output {
    Command::new(EXE).args(args).output().unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "secdiff failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Plain and MPC (--local) DDIM with `steps` steps on the first `n` reference images.
fn plain_and_local(dir: &Path, n: usize, steps: &str, labels: &str) -> (Vec<f32>, Vec<f32>) {
    let noise = noise_file(dir, n);
    let plain = dir.join("plain.safetensors");
    let mpc = dir.join("mpc.safetensors");
    let report = dir.join("report.json");
    let common = [
        "generate",
        "--sampler",
        "ddim",
        "--steps",
        steps,
        "--labels",
        labels,
        "--noise",
        s(&noise),
    ];
    ok(&run(&[&common[..], &["--raw-out", s(&plain)]].concat()));
    let out = run(&[
        &common[..],
        &[
            "--mode",
            "mpc",
            "--local",
            "--raw-out",
            s(&mpc),
            "--report",
            s(&report),
        ],
    ]
    .concat());
    ok(&out);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    for key in [
        "mode",
        "seconds_total",
        "seconds_per_step",
        "bytes_total",
        "bytes_per_party",
        "rounds",
        "ops",
        "max_abs_diff_vs_plain",
        "psnr_vs_plain",
    ] {
        assert!(r.get(key).is_some(), "report lacks {key}: {r}");
    }
    assert_eq!(r["mode"], "mpc");
    let per_party: u64 = r["bytes_per_party"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .sum();
    assert_eq!(per_party, r["bytes_total"].as_u64().unwrap());
    let op_bytes: u64 = r["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["bytes"].as_u64().unwrap())
        .sum();
    // Every byte the parties sent is charged to a model op, except the job check.
    assert!(
        op_bytes <= per_party && per_party - op_bytes < 10_000,
        "{r}"
    );
    let (plain, mpc) = (x0(&plain), x0(&mpc));
    let reported = r["max_abs_diff_vs_plain"].as_f64().unwrap();
    assert!((reported - max_diff(&plain, &mpc) as f64).abs() < 1e-6);
    (plain, mpc)
}

#[test]
fn mpc_local_ddim_matches_plaintext() {
    let dir = scratch("local");
    let (plain, mpc) = plain_and_local(&dir, 2, "5", "0,1");
    let err = max_diff(&plain, &mpc);
    eprintln!("DDIM-5, 2 images: mpc vs plain max abs diff {err:e}");
    assert!(err < 0.05, "x_0 differs from plaintext by {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The headline check of issue 5: `generate --mode mpc --local --sampler ddim --steps 50
/// --labels 0,1,1,0` on the reference x_T against CipherDM's own plaintext x_0 (and ours). The
/// sample took 146 s in release on the 2-core dev machine at a load average of 10 (other builds
/// and a training run), so on an idle CI machine it is a test of a minute or two.
#[test]
fn mpc_local_ddim50_matches_cipherdm_within_0_05() {
    let dir = scratch("ddim50");
    let (plain, mpc) = plain_and_local(&dir, 4, "50", "0,1,1,0");
    let (shape, nhwc) = cases().f32("ddim50.x_0").unwrap();
    // NHWC with C = 1 is NCHW.
    assert_eq!(shape, [4, 28, 28, 1]);
    let vs_cipherdm = max_diff(&mpc, &nhwc);
    eprintln!(
        "DDIM-50: mpc vs CipherDM {vs_cipherdm:e}, mpc vs plain {:e}",
        max_diff(&mpc, &plain)
    );
    assert!(vs_cipherdm < 0.05, "x_0 off CipherDM's by {vs_cipherdm}");
    let vs_plain = max_diff(&mpc, &plain);
    assert!(vs_plain < 0.05, "x_0 off plaintext by {vs_plain}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn parties_toml(dir: &Path, timeout: u64) -> PathBuf {
    let mut toml = format!(
        "session = 5\ntls = false\nrecv_timeout_secs = {timeout}\nconnect_timeout_secs = 30\n"
    );
    toml.push_str(&common::loopback_party_entries());
    let path = dir.join("parties.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn spawn_parties(cfg: &Path) -> Vec<Child> {
    (0..3)
        .map(|id| {
            Command::new(EXE)
                .args(["party", "--id", &id.to_string(), "--config", s(cfg)])
                .stderr(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect()
}

fn finish(kid: &mut Child) -> (bool, String) {
    let st = kid.wait().unwrap();
    let mut err = String::new();
    kid.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (st.success(), err)
}

#[test]
fn three_processes_over_tcp_give_the_local_result() {
    let dir = scratch("tcp");
    let noise = noise_file(&dir, 1);
    let cfg = parties_toml(&dir, 60);
    let mut parties = spawn_parties(&cfg);
    let mut owner = Command::new(EXE)
        .args(["owner", "--model", "cipherdm-mnist", "--parties", s(&cfg)])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let tcp = dir.join("tcp.safetensors");
    let common = [
        "generate",
        "--mode",
        "mpc",
        "--steps",
        "3",
        "--labels",
        "1",
        "--noise",
        s(&noise),
    ];
    let out = run(&[
        &common[..],
        &[
            "--parties",
            s(&cfg),
            "--shutdown-parties",
            "--raw-out",
            s(&tcp),
        ],
    ]
    .concat());
    ok(&out);
    assert!(finish(&mut owner).0, "owner failed");
    for p in &mut parties {
        let (success, err) = finish(p);
        assert!(success, "party failed: {err}");
    }
    let local = dir.join("local.safetensors");
    ok(&run(
        &[&common[..], &["--local", "--raw-out", s(&local)]].concat()
    ));
    // Shares are fresh random in each run, so the secure truncations round differently (by
    // 2^-18 at random, amplified by DDIM's 1/sqrt(alpha_bar) of up to 156); a different
    // computation would differ by far more.
    let d = max_diff(&x0(&tcp), &x0(&local));
    eprintln!("tcp vs local: max abs diff {d:e}");
    assert!(d < 5e-3, "tcp and local differ by {d}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_dead_party_is_named_by_the_client_and_the_others() {
    let dir = scratch("dead");
    let noise = noise_file(&dir, 1);
    let cfg = parties_toml(&dir, 10);
    let mut parties = spawn_parties(&cfg);
    let mut client = Command::new(EXE)
        .args([
            "generate",
            "--mode",
            "mpc",
            "--steps",
            "50",
            "--labels",
            "1",
            "--noise",
            s(&noise),
            "--parties",
            s(&cfg),
            "--serve-weights",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Let the sampling start (the weights and inputs take well under this), then kill P1.
    std::thread::sleep(Duration::from_secs(4));
    let t = Instant::now();
    parties[1].kill().unwrap();
    parties[1].wait().unwrap();
    for id in [0, 2] {
        let (success, err) = finish(&mut parties[id]);
        assert!(!success, "P{id} should fail");
        assert!(err.contains("P1"), "P{id} must name P1: {err}");
    }
    let (success, err) = finish(&mut client);
    assert!(!success, "the client should fail");
    assert!(err.contains("P1"), "the client must name P1: {err}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shares_of_the_wrong_shape_get_a_clear_error() {
    let dir = scratch("shape");
    let cfg_path = parties_toml(&dir, 20);
    let mut parties = spawn_parties(&cfg_path);
    let cfg = net::PartiesConfig::load(&cfg_path).unwrap();
    let links = net::connect_parties(&cfg, net::Peer::Client).unwrap();
    let model = diffusion::resolve_model("cipherdm-mnist").unwrap();
    let job = serde_json::json!({
        "job": "sample",
        "model": "cipherdm-mnist",
        "unet": model.config.unet,
        "schedule": model.config.schedule,
        "sampler": {"kind": "ddim", "steps": 2, "eta": 0.0, "spacing": "uniform", "clip_x0": true},
        "shape": [1, 1, 28, 28],
        "frac_bits": 18,
        "truncation": "robust",
        "methods": {"silu": "fine", "mish": "cipherdm", "gelu": "piecewise_poly",
                    "softmax": "ours", "norm": "fused", "activation_bound": 1024.0,
                    "score_bound": 32768.0, "clamp_bound": 16384.0},
    });
    for l in &links {
        l.send_msg(&net::Message::Control(job.to_string())).unwrap();
        // 14x14 images where the job announced 28x28.
        l.send_msg(&net::Message::shares("x_T", &[2, 1, 1, 14, 14], vec![0; 392]).unwrap())
            .unwrap();
    }
    for (i, l) in links.iter().enumerate() {
        let e = l.recv_msg().unwrap_err().to_string();
        assert!(
            e.contains(&format!("P{i}")) && e.contains("x_T") && e.contains("[2, 1, 1, 28, 28]"),
            "{e}"
        );
    }
    for p in &mut parties {
        let (success, err) = finish(p);
        assert!(!success);
        assert!(err.contains("x_T"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_parties_toml_missing_or_repeating_a_party_is_refused_before_any_work() {
    let dir = scratch("toml");
    let noise = noise_file(&dir, 1);
    let party = |id: usize, port: u16| {
        format!(
            "[[party]]\nid = {id}\nmesh = \"127.0.0.1:{port}\"\nclient = \"127.0.0.1:{}\"\n",
            port + 100
        )
    };
    let head = "session = 1\ntls = false\n";
    let missing = format!("{head}{}{}", party(0, 7400), party(1, 7401));
    let repeated = format!(
        "{head}{}{}{}",
        party(0, 7400),
        party(1, 7401),
        party(1, 7402)
    );
    for (name, text, want) in [("missing", missing, "2"), ("repeated", repeated, "1")] {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        for args in [
            vec![
                "generate",
                "--mode",
                "mpc",
                "--steps",
                "2",
                "--labels",
                "1",
                "--noise",
                s(&noise),
                "--parties",
                s(&path),
            ],
            vec!["owner", "--parties", s(&path)],
            vec!["party", "--id", "0", "--config", s(&path)],
        ] {
            let t = Instant::now();
            let out = run(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} accepted {name}");
            assert!(
                err.contains("party") && err.contains(want),
                "{args:?} {name}: {err}"
            );
            assert!(t.elapsed() < Duration::from_secs(5), "{args:?} waited");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// mnist-sd in a deployment: three party processes over TCP, the model owner as its own
/// process, this test as the client; the image matches the local form's and the plaintext one.
#[test]
fn a_text_model_over_tcp_with_a_separate_owner() {
    let dir = scratch("text-tcp");
    let cfg = parties_toml(&dir, 60);
    let mut parties = spawn_parties(&cfg);
    let mut owner = Command::new(EXE)
        .args(["owner", "--model", "mnist-sd", "--parties", s(&cfg)])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tcp, report) = (dir.join("tcp.safetensors"), dir.join("tcp.json"));
    let common = [
        "generate",
        "--model",
        "mnist-sd",
        "--mode",
        "mpc",
        "--prompt",
        "a handwritten 4",
        "--steps",
        "2",
    ];
    let out = run(&[
        &common[..],
        &[
            "--parties",
            s(&cfg),
            "--shutdown-parties",
            "--raw-out",
            s(&tcp),
            "--report",
            s(&report),
        ],
    ]
    .concat());
    ok(&out);
    let (owner_ok, owner_err) = finish(&mut owner);
    assert!(owner_ok, "owner failed: {owner_err}");
    assert!(
        owner_err.contains("410 parameters of mnist-sd"),
        "{owner_err}"
    );
    for p in &mut parties {
        let (success, err) = finish(p);
        assert!(success, "party failed: {err}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let mpc = &json["mpc"];
    assert_eq!(mpc["bytes_per_party"].as_array().unwrap().len(), 3, "{mpc}");
    // The client sent only the shares of its token rows and x_T (1 x 8 x 32 and 1 x 4 x 7 x 7
    // values, two components of 8 bytes to each party); the owner the shares of the weights.
    assert_eq!(
        mpc["bytes_client_to_parties"],
        3 * 2 * 8 * (8 * 32 + 4 * 7 * 7)
    );
    assert!(
        mpc["max_abs_diff_vs_plain"].as_f64().unwrap() < 0.05,
        "{mpc}"
    );
    let local = dir.join("local.safetensors");
    ok(&run(
        &[&common[..], &["--local", "--raw-out", s(&local)]].concat()
    ));
    let d = max_diff(&x0(&tcp), &x0(&local));
    eprintln!("text model, tcp vs local: max abs diff {d:e}");
    assert!(d < 1e-2, "tcp and local differ by {d}");
    let _ = std::fs::remove_dir_all(&dir);
}
