//! Mutually authenticated TLS 1.3 (rustls with the `ring` provider) between all roles.
//!
//! One private CA per deployment (made by `secdiff keygen`) issues a certificate to each role,
//! named `<role>.secdiff` (see [`Peer::cert_name`]). The dialing side checks that the acceptor's
//! certificate names the party it meant to reach; the accepting side checks that the dialer's
//! certificate names the role it claims in the secdiff handshake, so no participant can pose as
//! another even with a valid certificate of its own.

use crate::{ConfigError, NetError, Peer};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File names inside a key directory written by `secdiff keygen`.
pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}
pub fn cert_path(dir: &Path, role: Peer) -> PathBuf {
    dir.join(format!("{}.pem", role.file_stem()))
}
pub fn key_path(dir: &Path, role: Peer) -> PathBuf {
    dir.join(format!("{}.key", role.file_stem()))
}

/// This role's certificate and key plus the deployment's CA, ready to dial and to accept.
pub struct TlsIdentity {
    role: Peer,
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

fn tls(what: &str, e: impl std::fmt::Display) -> NetError {
    NetError::Tls(format!("{what}: {e}"))
}

fn read_file(path: &Path, role: Peer) -> Result<Vec<u8>, NetError> {
    if !path.exists() {
        return Err(ConfigError::MissingTlsFile {
            path: path.to_owned(),
            role: role.to_string(),
        }
        .into());
    }
    std::fs::read(path).map_err(|source| {
        ConfigError::Read {
            path: path.to_owned(),
            source,
        }
        .into()
    })
}

impl TlsIdentity {
    /// Loads `ca.pem`, `<role>.pem` and `<role>.key` from a key directory.
    pub fn load(dir: &Path, role: Peer) -> Result<Self, NetError> {
        let ca = read_file(&ca_cert_path(dir), role)?;
        let cert = read_file(&cert_path(dir, role), role)?;
        let key = read_file(&key_path(dir, role), role)?;
        Self::from_pem(&ca, &cert, &key, role)
            .map_err(|e| NetError::Tls(format!("key directory {} for {role}: {e}", dir.display())))
    }

    /// Builds an identity from PEM texts: the CA certificate, this role's certificate (chain)
    /// and its private key.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8], role: Peer) -> Result<Self, NetError> {
        Self::build(ca, cert, key, role, true)
    }

    /// An identity whose certificate may name another role: only for testing that peers
    /// refuse it.
    #[cfg(test)]
    pub(crate) fn impostor(ca: &[u8], cert: &[u8], key: &[u8], role: Peer) -> Self {
        Self::build(ca, cert, key, role, false).unwrap()
    }

    fn build(
        ca: &[u8],
        cert: &[u8],
        key: &[u8],
        role: Peer,
        check_own_name: bool,
    ) -> Result<Self, NetError> {
        let mut roots = RootCertStore::empty();
        let ca_certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca)
            .collect::<Result<_, _>>()
            .map_err(|e| tls("CA certificate", e))?;
        if ca_certs.is_empty() {
            return Err(NetError::Tls("no certificate in the CA file".into()));
        }
        for c in ca_certs {
            roots.add(c).map_err(|e| tls("CA certificate", e))?;
        }
        let roots = Arc::new(roots);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<_, _>>()
            .map_err(|e| tls("certificate", e))?;
        if chain.is_empty() {
            return Err(NetError::Tls(format!("no certificate for {role}")));
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| tls("private key", e))?;
        if check_own_name {
            check_cert_names(&chain[0], role)
                .map_err(|e| NetError::Tls(format!("the certificate given for {role} {e}")))?;
        }

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| tls("client verifier", e))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls("server config", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| tls("server certificate", e))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls("client config", e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls("client certificate", e))?;
        Ok(TlsIdentity {
            role,
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }

    pub fn role(&self) -> Peer {
        self.role
    }

    /// A client-side connection that only completes if the acceptor proves to be `target`.
    pub(crate) fn dial(&self, target: Peer) -> Result<rustls::Connection, NetError> {
        let name = ServerName::try_from(target.cert_name()).map_err(|e| tls("server name", e))?;
        let conn = ClientConnection::new(self.client.clone(), name)
            .map_err(|e| tls("client connection", e))?;
        Ok(conn.into())
    }

    pub(crate) fn accept(&self) -> Result<rustls::Connection, NetError> {
        let conn =
            ServerConnection::new(self.server.clone()).map_err(|e| tls("server connection", e))?;
        Ok(conn.into())
    }
}

/// Checks that a certificate (already verified against the CA) was issued to `role`.
fn check_cert_names(cert: &CertificateDer<'_>, role: Peer) -> Result<(), String> {
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("cannot be parsed: {e}"))?;
    let name = ServerName::try_from(role.cert_name()).map_err(|e| e.to_string())?;
    ee.verify_is_valid_for_subject_name(&name)
        .map_err(|_| format!("is not issued to {}", role.cert_name()))
}

/// Checks the certificate a dialer presented against the role it claims.
pub(crate) fn check_peer_role(conn: &rustls::Connection, claimed: Peer) -> Result<(), String> {
    let certs = conn.peer_certificates().ok_or("presented no certificate")?;
    let leaf = certs.first().ok_or("presented no certificate")?;
    check_cert_names(leaf, claimed).map_err(|e| format!("its certificate {e}"))
}
