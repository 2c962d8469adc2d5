//! Key material for one deployment: a private CA and a certificate per role (the three parties,
//! the client and the model owner), as `secdiff keygen` writes them.
//!
//! Each certificate is ECDSA P-256, names its role as a DNS name (`p0.secdiff`, ...,
//! `client.secdiff`, `owner.secdiff`) and may serve as a TLS client and server, since a party
//! both dials and accepts. The CA key is written next to them so more certificates can be issued
//! later; it should be kept offline, since whoever holds it can pose as any role.

use crate::tls::{ca_cert_path, cert_path, key_path};
use crate::{NetError, Peer};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::io::Write;
use std::path::{Path, PathBuf};

/// PEM texts of a whole deployment.
pub struct KeySet {
    pub ca_cert: String,
    pub ca_key: String,
    /// Certificate and private key of each role in [`Peer::ALL`].
    pub roles: Vec<(Peer, String, String)>,
}

fn rc(what: &str, e: rcgen::Error) -> NetError {
    NetError::Tls(format!("generating {what}: {e}"))
}

impl KeySet {
    /// A fresh CA and one certificate for every role.
    pub fn generate() -> Result<KeySet, NetError> {
        let ca_key = KeyPair::generate().map_err(|e| rc("CA key", e))?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| rc("CA", e))?;
        ca.distinguished_name
            .push(DnType::CommonName, "secdiff deployment CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).map_err(|e| rc("CA", e))?;
        let mut roles = Vec::new();
        for role in Peer::ALL {
            let key = KeyPair::generate().map_err(|e| rc("key", e))?;
            let mut p =
                CertificateParams::new(vec![role.cert_name()]).map_err(|e| rc("certificate", e))?;
            p.distinguished_name
                .push(DnType::CommonName, role.cert_name());
            p.is_ca = IsCa::NoCa;
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = p
                .signed_by(&key, &ca_cert, &ca_key)
                .map_err(|e| rc("certificate", e))?;
            roles.push((role, cert.pem(), key.serialize_pem()));
        }
        Ok(KeySet {
            ca_cert: ca_cert.pem(),
            ca_key: ca_key.serialize_pem(),
            roles,
        })
    }

    /// The PEM certificate and key of one role.
    pub fn role(&self, role: Peer) -> (&str, &str) {
        let (_, c, k) = self
            .roles
            .iter()
            .find(|(r, _, _)| *r == role)
            .expect("a KeySet holds every role");
        (c, k)
    }

    /// Writes `ca.pem`, `ca.key`, `<role>.pem` and `<role>.key` into `dir` (created if needed).
    /// Each file is written to a temporary name and renamed, keys with mode 0600. Existing files
    /// are only replaced with `overwrite`. Returns the paths written.
    pub fn write_dir(&self, dir: &Path, overwrite: bool) -> Result<Vec<PathBuf>, NetError> {
        let io = |path: &Path, e: std::io::Error| {
            NetError::Setup(format!("cannot write {}: {e}", path.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let mut files = vec![
            (ca_cert_path(dir), &self.ca_cert, false),
            (dir.join("ca.key"), &self.ca_key, true),
        ];
        for (role, cert, key) in &self.roles {
            files.push((cert_path(dir, *role), cert, false));
            files.push((key_path(dir, *role), key, true));
        }
        if !overwrite {
            if let Some((p, _, _)) = files.iter().find(|(p, _, _)| p.exists()) {
                return Err(NetError::Setup(format!(
                    "{} already exists (pass --force to replace the keys in {})",
                    p.display(),
                    dir.display()
                )));
            }
        }
        for (path, text, secret) in &files {
            let tmp = path.with_extension("tmp-keygen");
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            if *secret {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let _ = secret;
            let mut f = opts.open(&tmp).map_err(|e| io(&tmp, e))?;
            f.write_all(text.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| io(&tmp, e))?;
            std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
        }
        Ok(files.into_iter().map(|(p, _, _)| p).collect())
    }
}
