//! The stand-in behind TLS (`ollama-standin --tls-dir DIR`): a test CA and a server
//! certificate made at start, the CA written to `DIR/ca.pem` for the clients to trust, rustls
//! (ring) serving HTTP/1.1 only — its ALPN offers no `h2`, so Go and Node clients speak
//! HTTP/1.1 as they do to Ollama.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::ServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// The names and addresses the server certificate is valid for.
pub const SERVER_NAMES: [&str; 7] =
    ["localhost", "standin.test", "unrelated.test", "127.0.0.1", "127.0.0.2", "127.0.0.3", "::1"];

/// The CA's file name in the directory.
pub const CA_FILE: &str = "ca.pem";

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("making the test certificates: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("writing the CA: {0}")]
    Io(#[from] std::io::Error),
}

/// Makes the CA (written to `dir/ca.pem`) and the server's certificate, valid for
/// [`SERVER_NAMES`] and the addresses `listen` (the server's certificate and key are written
/// too, `server.pem` and `server-key.pem`, for another test server); the server's TLS
/// configuration.
pub fn server_config(dir: &Path, listen: &[IpAddr]) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "ollama-tracer test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let mut names: Vec<String> = SERVER_NAMES.iter().map(|s| s.to_string()).collect();
    names.extend(listen.iter().map(IpAddr::to_string).filter(|ip| !SERVER_NAMES.contains(&ip.as_str())));
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, "ollama-standin");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(CA_FILE), ca.pem())?;
    std::fs::write(dir.join("server.pem"), cert.pem())?;
    std::fs::write(dir.join("server-key.pem"), key.serialize_pem())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
