//! `secdiff party` as three OS processes over loopback TCP: the bench driver gets the same
//! metered costs and correct results as the in-process runner, and killing one party mid-protocol
//! makes the other two exit with an error that names it.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_secdiff");

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("secdiff-cli-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn records(path: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn processes_and_threads_agree() {
    let dir = scratch("agree");
    let mut out = Vec::new();
    for mode in [None, Some("--processes")] {
        let json = dir.join(format!("{}.json", mode.is_some()));
        let mut cmd = Command::new(EXE);
        cmd.args([
            "bench",
            "ops",
            "--ops",
            "mul,matmul,less",
            "--n",
            "4096",
            "--trunc",
            "both",
            "--repeat",
            "1",
            "--json",
        ])
        .arg(&json);
        if let Some(m) = mode {
            cmd.arg(m);
        }
        let st = cmd
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{mode:?}: {st}");
        out.push(records(&json));
    }
    let (threads, procs) = (&out[0], &out[1]);
    assert_eq!(threads.len(), 6);
    for (t, p) in threads.iter().zip(procs) {
        assert_eq!(t["op"], p["op"]);
        // The helper rotation depends on how many protocols the session ran before, so compare
        // the per-party loads as a multiset.
        let sorted = |v: &serde_json::Value| {
            let mut b: Vec<u64> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect();
            b.sort_unstable();
            b
        };
        assert_eq!(
            sorted(&t["bytes_per_party"]),
            sorted(&p["bytes_per_party"]),
            "{} {}",
            t["op"],
            t["trunc"]
        );
        assert_eq!(t["rounds"], p["rounds"]);
        assert!(p["max_abs_err"].as_f64().unwrap() < 1e-3, "{p}");
        if p["op"] == "less" {
            assert_eq!(p["max_abs_err"].as_f64().unwrap(), 0.0);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn killing_a_party_mid_protocol_names_it_at_the_others() {
    let dir = scratch("kill");
    let mut toml = String::from(
        "session = 3\ntls = false\nrecv_timeout_secs = 20\nconnect_timeout_secs = 20\n",
    );
    toml.push_str(&common::loopback_party_entries());
    let cfg_path = dir.join("parties.toml");
    std::fs::write(&cfg_path, toml).unwrap();
    let mut kids: Vec<_> = (0..3)
        .map(|id| {
            Command::new(EXE)
                .args(["party", "--id", &id.to_string(), "--config"])
                .arg(&cfg_path)
                .stderr(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Drive a long job: many comparisons of 2M values.
    let cfg = net::PartiesConfig::load(&cfg_path).unwrap();
    let links = net::connect_parties(&cfg, net::Peer::Client).unwrap();
    let op = mpc::bench::find("less").unwrap();
    let (_, dealt) =
        mpc::bench::prepare_inputs(op.as_ref(), 2_000_000, ring::FixedPoint::new(18), 1).unwrap();
    let job =
        r#"{"job":"bench_ops","op":"less","frac_bits":18,"method":"fast","repeat":200,"inputs":1}"#;
    for (i, l) in links.iter().enumerate() {
        l.send_msg(&net::Message::Control(job.into())).unwrap();
        l.send(dealt[0][i].to_bytes()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    kids[1].kill().unwrap();
    kids[1].wait().unwrap();
    for id in [0, 2] {
        let st = kids[id].wait().unwrap();
        let mut err = String::new();
        kids[id]
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(!st.success(), "P{id} should fail");
        assert!(err.contains("P1"), "P{id} must name P1: {err}");
    }
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the survivors took {:?}",
        t.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
