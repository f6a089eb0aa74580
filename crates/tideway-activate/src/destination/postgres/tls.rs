//! The connection URL's TLS settings, as libpq reads them, on rustls.
//!
//! | `sslmode`               | TLS                     | the server's certificate                      |
//! |-------------------------|-------------------------|-----------------------------------------------|
//! | `disable`               | no                      | -                                             |
//! | `prefer` (the default)  | if the server offers it | not checked (libpq's meaning)                 |
//! | `require`               | yes                     | not checked (libpq's meaning)                 |
//! | `verify-ca`, `verify-full` | yes                  | checked, with the host name, against `sslrootcert` (a PEM file) or else the Mozilla roots |
//!
//! Unlike libpq, `prefer` does not fall back to a plain connection when the TLS handshake
//! fails (tokio-postgres does not), and `verify-ca` checks the host name too.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Whether and how the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// TLS without checking the certificate (`prefer`, `require`), or no TLS (`disable`).
    No,
    /// The certificate must chain to these roots (`sslrootcert`) or, `None`, the Mozilla roots,
    /// and name the host.
    Full { root_cert: Option<String> },
}

/// Takes `sslmode` and `sslrootcert` out of `url` (tokio-postgres knows neither
/// `verify-ca`/`verify-full` nor `sslrootcert`): the URL left, and what to check.
pub fn split_url(url: &str) -> Result<(String, Verify), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), Verify::No));
    };
    let mut kept = Vec::new();
    let mut full = false;
    let mut root_cert = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", "verify-ca" | "verify-full")) => {
                full = true;
                kept.push("sslmode=require");
            }
            Some(("sslmode", "disable" | "prefer" | "require")) => kept.push(pair),
            Some(("sslmode", other)) => {
                return Err(format!(
                    "`sslmode={other}` is not one of disable, prefer, require, verify-ca, verify-full"
                ));
            }
            Some(("sslrootcert", path)) => root_cert = Some(path.to_string()),
            _ => kept.push(pair),
        }
    }
    if root_cert.is_some() && !full {
        return Err("`sslrootcert` is read only with `sslmode=verify-full` (or verify-ca)".into());
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let verify = if full {
        Verify::Full { root_cert }
    } else {
        Verify::No
    };
    Ok((url, verify))
}

/// The TLS connector for `verify`; `Err` when `sslrootcert` cannot be read.
pub fn connector(verify: &Verify) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring's default provider supports the default TLS versions");
    let config = match verify {
        Verify::No => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertificateCheck(provider)))
            .with_no_client_auth(),
        Verify::Full { root_cert } => {
            let mut roots = rustls::RootCertStore::empty();
            match root_cert {
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                Some(path) => {
                    let bad = |e: &dyn std::fmt::Display| {
                        format!(
                            "`sslrootcert` {path} is not a readable PEM file of certificates: {e}"
                        )
                    };
                    let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))?;
                    for cert in certs {
                        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
                    }
                    if roots.is_empty() {
                        return Err(bad(&"no certificate in it"));
                    }
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// Accepts any certificate but still checks the handshake's signatures: `sslmode=require`
/// encrypts without authenticating the server, as libpq does.
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_read_as_libpq_reads_them() {
        let url = "postgres://u:p@db:5432/app";
        assert_eq!(split_url(url), Ok((url.to_string(), Verify::No)));
        assert_eq!(
            split_url("postgres://u:p@db/app?sslmode=require&connect_timeout=5"),
            Ok((
                "postgres://u:p@db/app?sslmode=require&connect_timeout=5".to_string(),
                Verify::No
            ))
        );
        assert_eq!(
            split_url("postgres://u:p@db/app?sslmode=verify-full&sslrootcert=/etc/rds.pem"),
            Ok((
                "postgres://u:p@db/app?sslmode=require".to_string(),
                Verify::Full {
                    root_cert: Some("/etc/rds.pem".into())
                }
            ))
        );
        assert!(split_url("postgres://db/app?sslmode=allow").is_err());
        assert!(split_url("postgres://db/app?sslrootcert=/x.pem").is_err());
    }

    #[test]
    fn connectors() {
        assert!(connector(&Verify::No).is_ok());
        assert!(connector(&Verify::Full { root_cert: None }).is_ok());
        let missing = connector(&Verify::Full {
            root_cert: Some("/nonexistent/root.pem".into()),
        });
        assert!(matches!(missing, Err(e) if e.contains("/nonexistent/root.pem")));
    }
}
