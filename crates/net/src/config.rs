//! `parties.toml`: where the three parties listen, the session parameters and the TLS key
//! directory. Everything is checked when the file is loaded, before any connection is made, so a
//! deployment that is missing a party, repeats one or names absent key files fails at once with
//! an error that says which.
//!
//! ```toml
//! session = 1                  # frames and handshakes of any other session are refused
//! tls_dir = "keys"             # from `secdiff keygen`; relative to this file. TLS is on when set
//! # tls = false                # plaintext links, for loopback benchmarks only
//! recv_timeout_secs = 60       # a peer silent this long is declared dead
//! connect_timeout_secs = 30    # how long to wait for the others to come up
//! max_frame_bytes = 4294967296
//!
//! [[party]]
//! id = 0
//! mesh = "127.0.0.1:7000"      # links between parties
//! client = "127.0.0.1:7100"    # links from the client and the model owner
//! ```

use crate::mesh::MeshOptions;
use crate::tls::{ca_cert_path, TlsIdentity};
use crate::{ConfigError, NetError, PartyId, Peer, PARTIES};
use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    session: Option<u64>,
    tls: Option<bool>,
    tls_dir: Option<PathBuf>,
    recv_timeout_secs: Option<f64>,
    connect_timeout_secs: Option<f64>,
    max_frame_bytes: Option<u64>,
    #[serde(default)]
    party: Vec<RawParty>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParty {
    id: i64,
    mesh: String,
    client: String,
}

/// A validated deployment description.
#[derive(Clone, Debug)]
pub struct PartiesConfig {
    /// The file it came from (for messages).
    pub path: PathBuf,
    pub session: u64,
    /// Where each party accepts the other parties.
    pub mesh: [SocketAddr; PARTIES],
    /// Where each party accepts the client and the model owner.
    pub client: [SocketAddr; PARTIES],
    /// The key directory; `None` means plaintext links.
    pub tls_dir: Option<PathBuf>,
    pub recv_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_frame: u64,
}

fn resolve(
    path: &Path,
    id: PartyId,
    what: &'static str,
    addr: &str,
) -> Result<SocketAddr, ConfigError> {
    let bad = |reason: String| ConfigError::BadAddress {
        path: path.to_owned(),
        id,
        what,
        addr: addr.to_string(),
        reason,
    };
    let mut addrs = addr
        .to_socket_addrs()
        .map_err(|e| bad(format!("{e} (expected host:port)")))?;
    let first = addrs
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))?;
    if first.port() == 0 {
        return Err(bad("port 0 is not a fixed port".into()));
    }
    Ok(first)
}

fn seconds(path: &Path, key: &str, v: Option<f64>, default: f64) -> Result<Duration, ConfigError> {
    let s = v.unwrap_or(default);
    if !(s.is_finite() && s > 0.0 && s < 1e7) {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            what: format!("{key} must be a positive number of seconds, got {s}"),
        });
    }
    Ok(Duration::from_secs_f64(s))
}

impl PartiesConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Validates config text; `path` names it in errors and anchors a relative `tls_dir`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut slots: [Option<&RawParty>; PARTIES] = [None; PARTIES];
        for p in &raw.party {
            let slot = usize::try_from(p.id)
                .ok()
                .and_then(|i| slots.get_mut(i))
                .ok_or(ConfigError::UnknownParty {
                    path: path.to_owned(),
                    id: p.id,
                })?;
            if slot.is_some() {
                return Err(ConfigError::DuplicateParty {
                    path: path.to_owned(),
                    id: p.id,
                });
            }
            *slot = Some(p);
        }
        let mut mesh = Vec::with_capacity(PARTIES);
        let mut client = Vec::with_capacity(PARTIES);
        for (id, slot) in slots.iter().enumerate() {
            let p = slot.ok_or(ConfigError::MissingParty {
                path: path.to_owned(),
                id,
            })?;
            mesh.push(resolve(path, id, "mesh", &p.mesh)?);
            client.push(resolve(path, id, "client", &p.client)?);
        }
        let mut seen: Vec<(SocketAddr, String)> = Vec::new();
        for (id, (m, c)) in mesh.iter().zip(&client).enumerate() {
            for (addr, what) in [(m, "mesh"), (c, "client")] {
                let who = format!("party {id} {what}");
                if let Some((_, first)) = seen.iter().find(|(a, _)| a == addr) {
                    return Err(ConfigError::Invalid {
                        path: path.to_owned(),
                        what: format!("address {addr} is used twice ({first} and {who})"),
                    });
                }
                seen.push((*addr, who));
            }
        }

        let tls_dir = match (raw.tls, raw.tls_dir) {
            (Some(false), _) => None,
            (_, Some(dir)) => {
                let dir = if dir.is_relative() {
                    path.parent().unwrap_or(Path::new(".")).join(dir)
                } else {
                    dir
                };
                let ca = ca_cert_path(&dir);
                if !ca.exists() {
                    return Err(ConfigError::MissingTlsFile {
                        path: ca,
                        role: "every participant".into(),
                    });
                }
                Some(dir)
            }
            (Some(true), None) => {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    what: "tls = true needs tls_dir (the directory `secdiff keygen` wrote)".into(),
                })
            }
            (None, None) => {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    what: "set tls_dir (TLS, the default) or tls = false (plaintext, for \
                           loopback benchmarks)"
                        .into(),
                })
            }
        };
        let max_frame = raw.max_frame_bytes.unwrap_or(crate::DEFAULT_MAX_FRAME);
        if max_frame < 1024 {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                what: format!("max_frame_bytes = {max_frame} is too small (at least 1024)"),
            });
        }
        Ok(PartiesConfig {
            path: path.to_owned(),
            session: raw.session.unwrap_or(1),
            mesh: [mesh[0], mesh[1], mesh[2]],
            client: [client[0], client[1], client[2]],
            tls_dir,
            recv_timeout: seconds(path, "recv_timeout_secs", raw.recv_timeout_secs, 60.0)?,
            connect_timeout: seconds(path, "connect_timeout_secs", raw.connect_timeout_secs, 30.0)?,
            max_frame,
        })
    }

    pub fn mesh_options(&self) -> MeshOptions {
        MeshOptions {
            session: self.session,
            recv_timeout: self.recv_timeout,
            connect_timeout: self.connect_timeout,
            max_frame: self.max_frame,
        }
    }

    /// Loads `role`'s certificate and key, or `None` in plaintext mode. Call it before starting
    /// work: missing or mismatched key files are reported here.
    pub fn tls_identity(&self, role: Peer) -> Result<Option<TlsIdentity>, NetError> {
        self.tls_dir
            .as_deref()
            .map(|dir| TlsIdentity::load(dir, role))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARTIES3: &str = r#"
[[party]]
id = 0
mesh = "127.0.0.1:7000"
client = "127.0.0.1:7100"
[[party]]
id = 1
mesh = "127.0.0.1:7001"
client = "127.0.0.1:7101"
[[party]]
id = 2
mesh = "localhost:7002"
client = "127.0.0.1:7102"
"#;

    fn parse(text: &str) -> Result<PartiesConfig, ConfigError> {
        PartiesConfig::parse(text, Path::new("test/parties.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_complete_plaintext_config_loads_with_defaults() {
        let c = parse(&format!("tls = false\nsession = 9\n{PARTIES3}")).unwrap();
        assert_eq!(c.session, 9);
        assert_eq!(c.mesh[1], "127.0.0.1:7001".parse().unwrap());
        assert_eq!(c.mesh[2].port(), 7002);
        assert_eq!(c.client[2].port(), 7102);
        assert!(c.tls_dir.is_none());
        assert_eq!(c.recv_timeout, Duration::from_secs(60));
        assert_eq!(c.max_frame, 4 << 30);
    }

    #[test]
    fn missing_repeated_and_unknown_parties_are_named() {
        let without_p1 = PARTIES3.replace("id = 1", "id = 2");
        let e = err(&format!("tls = false\n{without_p1}"));
        assert!(e.contains("party 2 is listed more than once"), "{e}");
        let only_two = PARTIES3
            .split("[[party]]")
            .take(3)
            .collect::<Vec<_>>()
            .join("[[party]]");
        let e = err(&format!("tls = false\n{only_two}"));
        assert!(e.contains("party 2 is missing"), "{e}");
        let e = err(&format!(
            "tls = false\n{}",
            PARTIES3.replace("id = 0", "id = 3")
        ));
        assert!(e.contains("party id 3 is out of range"), "{e}");
        let e = err(&format!(
            "tls = false\n{}",
            PARTIES3.replace("id = 0", "id = -1")
        ));
        assert!(e.contains("party id -1"), "{e}");
    }

    #[test]
    fn bad_addresses_and_settings_are_named() {
        let e = err(&format!(
            "tls = false\n{}",
            PARTIES3.replace("127.0.0.1:7101", "nonsense")
        ));
        assert!(e.contains("client address \"nonsense\" of party 1"), "{e}");
        let e = err(&format!(
            "tls = false\n{}",
            PARTIES3.replace("7102", "7000")
        ));
        assert!(
            e.contains("127.0.0.1:7000 is used twice (party 0 mesh and party 2 client)"),
            "{e}"
        );
        let e = err(PARTIES3);
        assert!(e.contains("set tls_dir"), "{e}");
        let e = err(&format!("tls = true\n{PARTIES3}"));
        assert!(e.contains("tls = true needs tls_dir"), "{e}");
        let e = err(&format!("tls_dir = \"/nonexistent/keys\"\n{PARTIES3}"));
        assert!(
            e.contains("/nonexistent/keys/ca.pem") && e.contains("secdiff keygen"),
            "{e}"
        );
        let e = err(&format!("tls = false\nrecv_timeout_secs = 0\n{PARTIES3}"));
        assert!(e.contains("recv_timeout_secs must be a positive"), "{e}");
        let e = err(&format!("tls = false\nsesion = 3\n{PARTIES3}"));
        assert!(e.contains("unknown field `sesion`"), "{e}");
        let e = PartiesConfig::load(Path::new("/nonexistent/parties.toml")).unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot read /nonexistent/parties.toml"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod shipped_configs {
    use super::*;

    #[test]
    fn the_example_configs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let plain = PartiesConfig::load(&dir.join("local-parties-plain.toml")).unwrap();
        assert!(plain.tls_dir.is_none());
        // The TLS example needs keys from `secdiff keygen`; without them it must say so.
        let path = dir.join("local-parties.toml");
        match PartiesConfig::load(&path) {
            Ok(c) => assert_eq!(c.tls_dir, Some(dir.join("keys"))),
            Err(e) => assert!(matches!(e, ConfigError::MissingTlsFile { .. }), "{e}"),
        }
    }
}
