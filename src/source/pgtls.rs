//! TLS for stackback's own PostgreSQL connections, with libpq's `sslmode` meanings (pg_dump and
//! psql get the same `PGSSLMODE`/`PGSSLROOTCERT`, so every connection of a run agrees).
//!
//! | sslmode | what happens |
//! | --- | --- |
//! | `disable` | plain |
//! | `allow` | plain; if the server refuses that, TLS without certificate checks |
//! | `prefer` (libpq's default) | TLS without certificate checks when the server offers it, else plain |
//! | `require` | TLS, certificate not checked (encryption against eavesdroppers, not impostors) |
//! | `verify-ca` | TLS, the chain checked against `sslrootcert` (the host name is not) |
//! | `verify-full` | TLS, the chain and the host name checked |
//!
//! `sslrootcert` is a PEM file, `system` for the operating system's store, or by default
//! `~/.postgresql/root.crt` as libpq has it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

pub use crate::config::SslMode;

/// How a connection attempt negotiates: the tokio-postgres mode and the TLS configuration.
pub struct Attempt {
    pub mode: tokio_postgres::config::SslMode,
    pub tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

/// The connection attempts `mode` makes, in order (a second one only for `allow` and `prefer`,
/// which fall back as libpq does).
///
/// # Errors
/// A root certificate file that cannot be read (verify-ca, verify-full).
pub fn attempts(mode: SslMode, rootcert: Option<&Path>) -> Result<Vec<Attempt>, String> {
    use tokio_postgres::config::SslMode as Tp;
    let plain = || Attempt {
        mode: Tp::Disable,
        tls: None,
    };
    let unverified = || -> Result<Attempt, String> {
        Ok(Attempt {
            mode: Tp::Require,
            tls: Some(connector(Verify::Nothing)?),
        })
    };
    Ok(match mode {
        SslMode::Disable => vec![plain()],
        SslMode::Allow => vec![plain(), unverified()?],
        SslMode::Prefer => vec![unverified()?, plain()],
        SslMode::Require => vec![unverified()?],
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = roots(rootcert)?;
            let what = if mode == SslMode::VerifyCa {
                Verify::Chain(roots)
            } else {
                Verify::ChainAndName(roots)
            };
            vec![Attempt {
                mode: Tp::Require,
                tls: Some(connector(what)?),
            }]
        }
    })
}

enum Verify {
    Nothing,
    Chain(rustls::RootCertStore),
    ChainAndName(rustls::RootCertStore),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn connector(verify: Verify) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let webpki = |roots: rustls::RootCertStore| {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| e.to_string())
    };
    let verifier: Arc<dyn ServerCertVerifier> = match verify {
        Verify::Nothing => Arc::new(AcceptAny(provider.clone())),
        Verify::Chain(roots) => Arc::new(ChainOnly(webpki(roots)?)),
        Verify::ChainAndName(roots) => webpki(roots)?,
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The trusted roots: `sslrootcert`'s file, the system's store for `system`, or libpq's default
/// `~/.postgresql/root.crt`.
fn roots(rootcert: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    if rootcert == Some(Path::new("system")) {
        let found = rustls_native_certs::load_native_certs();
        for c in found.certs {
            let _ = store.add(c);
        }
        return Ok(store);
    }
    let path: PathBuf = match rootcert {
        Some(p) => p.to_path_buf(),
        None => {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".postgresql/root.crt")
        }
    };
    let certs = CertificateDer::pem_file_iter(&path).map_err(|e| {
        format!(
            "sslrootcert {}: {e} (verify-ca and verify-full need the CA that signed the server's certificate)",
            path.display()
        )
    })?;
    for c in certs {
        let c = c.map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
        store
            .add(c)
            .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
    }
    Ok(store)
}

/// `require` and `prefer`: encrypted, whoever answers; handshake signatures are still checked.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the full WebPKI check, forgiving only a name that does not match. WebPKI checks
/// the chain before the name, so a name error means the chain held.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_fall_back_like_libpq() {
        for m in [
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ] {
            assert_eq!(m.parse::<SslMode>().unwrap().as_str(), m);
        }
        assert!("verify".parse::<SslMode>().is_err());
        assert_eq!(attempts(SslMode::Prefer, None).unwrap().len(), 2);
        assert_eq!(attempts(SslMode::Require, None).unwrap().len(), 1);
        let missing = attempts(SslMode::VerifyFull, Some(Path::new("/nonexistent/ca.pem")));
        assert!(missing.is_err_and(|e| e.contains("/nonexistent/ca.pem")));
    }
}
