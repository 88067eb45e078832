//! TLS to upstream servers, always verified unless the operator wrote
//! `verify = false`: trusted roots from `ca_file` or the system store, and a
//! name that is never empty — the pool's `sni`, or the server's IP address,
//! checked against the certificate's IP SANs. (Pingora 0.9.1's rustls
//! connector skips verification on an empty SNI; this connector has no such
//! path.)

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use super::certs::provider;
use crate::config::{ConfigError, UpstreamTls};

/// How one pool reaches its servers over TLS.
#[derive(Clone)]
pub struct UpstreamTlsConfig {
    connector: TlsConnector,
    sni: Option<ServerName<'static>>,
    /// The `ca_file` certificates (DER), when one is set.
    ca_ders: Option<Vec<Vec<u8>>>,
    /// Whether certificates are verified.
    pub verify: bool,
    /// What this config trusts (`verify` and the `ca_file` certificates),
    /// hashed: pooled connections are shared only between configs that
    /// trust alike, so a verifying pool never reuses a connection that a
    /// `verify = false` pool (or one with another CA) opened to the same
    /// server.
    trust: u64,
}

impl std::fmt::Debug for UpstreamTlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTlsConfig")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .finish()
    }
}

impl UpstreamTlsConfig {
    /// Build the client side for `[upstream.NAME]` (`at` is its TOML path).
    pub fn build(tls: &UpstreamTls, at: &str, base: &Path) -> Result<Self, Vec<ConfigError>> {
        let error = |field: &str, message: String| ConfigError {
            path: format!("{at}.{field}"),
            message,
        };
        let sni = match &tls.sni {
            None => None,
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                vec![error(
                    "sni",
                    format!("{name:?} is not a DNS name or IP address"),
                )]
            })?),
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| vec![error("tls", format!("TLS setup failed: {e}"))])?;
        let mut ca_ders = None;
        let mut config = if tls.verify {
            let mut roots = RootCertStore::empty();
            match &tls.ca_file {
                Some(file) => {
                    let path = base.join(file);
                    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
                        .map_err(|e| {
                            vec![error(
                                "ca_file",
                                format!("cannot read {}: {e}", path.display()),
                            )]
                        })?
                        .collect::<Result<_, _>>()
                        .map_err(|e| {
                            vec![error(
                                "ca_file",
                                format!("{} is not valid PEM: {e}", path.display()),
                            )]
                        })?;
                    if certs.is_empty() {
                        return Err(vec![error(
                            "ca_file",
                            format!("{} holds no certificate", path.display()),
                        )]);
                    }
                    ca_ders = Some(certs.iter().map(|c| c.to_vec()).collect());
                    for c in certs {
                        roots.add(c).map_err(|e| {
                            vec![error("ca_file", format!("{}: {e}", path.display()))]
                        })?;
                    }
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    for c in found.certs {
                        let _ = roots.add(c);
                    }
                    if roots.is_empty() {
                        return Err(vec![error(
                            "ca_file",
                            "no system root certificates found: set ca_file".to_owned(),
                        )]);
                    }
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            tracing::warn!(
                upstream = at,
                "upstream TLS certificates are NOT verified (verify = false)"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification))
                .with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let trust = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (tls.verify, &ca_ders).hash(&mut h);
            h.finish()
        };
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            trust,
            sni,
            ca_ders,
            verify: tls.verify,
        })
    }

    /// The connector.
    pub fn connector(&self) -> TlsConnector {
        self.connector.clone()
    }

    /// The name sent and verified for the server at `addr`.
    pub fn server_name(&self, addr: SocketAddr) -> ServerName<'static> {
        self.sni
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
    }

    /// The name as text (the HTTP/2 path hands it to Pingora's connector).
    pub fn sni_text(&self, addr: SocketAddr) -> String {
        match self.server_name(addr) {
            ServerName::DnsName(d) => d.as_ref().to_owned(),
            ServerName::IpAddress(ip) => std::net::IpAddr::from(ip).to_string(),
            other => format!("{other:?}"),
        }
    }

    /// The trusted CAs in the form Pingora's connector takes (`None`: its
    /// default store, the system roots).
    pub fn pingora_ca(&self) -> Option<Arc<pingora_core::protocols::tls::CaType>> {
        let ders = self.ca_ders.as_ref()?;
        let certs: Vec<pingora_core::utils::tls::WrappedX509> = ders
            .iter()
            .map(|d| {
                pingora_core::utils::tls::WrappedX509::new(
                    d.clone(),
                    pingora_core::utils::tls::parse_x509,
                )
            })
            .collect();
        Some(Arc::from(certs.into_boxed_slice()))
    }

    /// What distinguishes pooled connections to `addr` made with this
    /// config: the name verified and what it was verified against.
    pub fn identity(&self, addr: SocketAddr) -> Arc<str> {
        Arc::from(format!("{:?}/{:x}", self.server_name(addr), self.trust).as_str())
    }

    /// [`Self::identity`]'s trust part, for Pingora's connection pool (the
    /// HTTP/2 path), which tells peers apart by `group_key`.
    pub fn trust_key(&self) -> u64 {
        self.trust
    }
}

/// `verify = false`: accepts any certificate. Only ever built when the
/// operator wrote it out, and logged at start.
#[derive(Debug)]
struct NoVerification;

impl ServerCertVerifier for NoVerification {
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
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
