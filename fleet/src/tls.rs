//! A self-signed certificate made on the spot, for TLS on the public port.

use std::path::{Path, PathBuf};

/// A certificate for `localhost` and `127.0.0.1`, and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    /// The certificate (PEM): what clients must trust.
    pub cert_pem: String,
    /// The same certificate, DER-encoded.
    pub cert_der: Vec<u8>,
    /// Path of the certificate file.
    pub cert: PathBuf,
    /// Path of the private key file.
    pub key: PathBuf,
}

impl SelfSigned {
    /// Makes the certificate and writes it and its key into `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let certified = rcgen::generate_simple_self_signed(names)?;
        let cert_pem = certified.cert.pem();
        let cert_der = certified.cert.der().to_vec();
        let cert = dir.join("natter.crt");
        let key = dir.join("natter.key");
        std::fs::write(&cert, &cert_pem)?;
        std::fs::write(&key, certified.signing_key.serialize_pem())?;
        Ok(Self {
            cert_pem,
            cert_der,
            cert,
            key,
        })
    }
}
