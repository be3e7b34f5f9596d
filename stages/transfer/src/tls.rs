//! TLS for FTPS: a rustls client configuration per session.
//!
//! Roots are the system's (rustls-native-certs) plus the connection's `tls_ca_file`;
//! `tls_insecure` accepts any certificate (for self-signed servers, opt-in only). Each
//! session gets its own resumption cache, shared by its control and data connections, so
//! servers that require TLS session reuse on the data channel (vsftpd
//! `require_ssl_reuse=YES`) accept them, and sessions do not evict each other's tickets.

use std::path::Path;
use std::sync::Arc;

use ftp_pooler_config::FtpConnection;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// What every session of one connection shares: the trust roots (parsed once).
#[derive(Clone, Debug)]
pub struct TlsContext {
    roots: Arc<RootCertStore>,
    insecure: bool,
}

impl TlsContext {
    /// Loads the roots for a connection: system roots plus its CA file, if any.
    pub fn for_connection(conn: &FtpConnection) -> Result<TlsContext, String> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        if let Some(ca) = &conn.tls_ca_file {
            for cert in read_pem(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("tls_ca_file {}: {e}", ca.display()))?;
            }
        }
        Ok(TlsContext {
            roots: Arc::new(roots),
            insecure: conn.tls_insecure,
        })
    }

    /// A fresh client configuration with its own session cache.
    pub fn client_config(&self) -> ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let mut config = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(self.roots.clone())
                .with_no_client_auth()
        };
        config.resumption = Resumption::in_memory_sessions(16);
        config
    }
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("tls_ca_file {}: {e}", path.display()))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut data.as_slice()).collect();
    let certs = certs.map_err(|e| format!("tls_ca_file {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_ca_file {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// `tls_insecure = true`: accepts any certificate, still checks handshake signatures.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

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
