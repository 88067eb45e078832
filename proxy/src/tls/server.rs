//! TLS termination for one listener: the rustls server configuration (TLS
//! 1.2 and 1.3 with rustls' safe defaults, ALPN `h2` and `http/1.1`) and the
//! certificate resolver that picks a certificate by SNI — an exact name, else
//! the longest `*.` wildcard, else the listener's default.
//!
//! A `ServerTls` is part of the runtime snapshot: a reload builds a new one
//! from the new files, and the next handshake on that listener uses it while
//! open connections keep theirs. The session cache and the ticket keys are
//! carried from one snapshot to the next, so a reload does not cost clients
//! their session resumption.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::certs::{self, LoadedCert};
use crate::config::{ConfigError, ListenerTls};

/// Sessions kept for resumption by a stateful cache: enough for a busy
/// listener, bounded (rustls evicts the oldest).
const SESSION_CACHE: usize = 20_000;

/// Resumption state that lives as long as the listener, across reloads.
#[derive(Clone)]
pub struct SessionState {
    cache: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
}

impl std::fmt::Debug for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionState")
    }
}

impl SessionState {
    /// A fresh cache and ticket-key rotation (rustls rotates the keys
    /// every six hours).
    pub fn new() -> Result<Self, rustls::Error> {
        Ok(Self {
            cache: rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE),
            ticketer: rustls::crypto::ring::Ticketer::new()?,
        })
    }
}

/// Picks a certificate for a ClientHello.
#[derive(Debug)]
struct Resolver {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `example.com` for `*.example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl Resolver {
    fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name.map(str::to_ascii_lowercase) else {
            return self.default.clone();
        };
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        // `*.example.com` covers exactly one label under example.com.
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(parent) {
                return k.clone();
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// One listener's TLS: its rustls config and the certificates in it.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    /// Every certificate, default first (for stats and expiry warnings).
    pub certs: Vec<LoadedCert>,
    /// Resumption state to carry into the next snapshot.
    pub sessions: SessionState,
}

impl ServerTls {
    /// Load the files of `tls` (relative paths from `base`) and build the
    /// listener's config, reusing `sessions`.
    pub fn build(
        tls: &ListenerTls,
        sessions: SessionState,
        base: &Path,
    ) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let default = certs::load(&tls.default, base)
            .map_err(|e| errors.extend(e))
            .ok();
        let mut loaded = Vec::new();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for sni in &tls.sni {
            let Ok(cert) = certs::load(&sni.files, base).map_err(|e| errors.extend(e)) else {
                continue;
            };
            for (i, name) in sni.names.iter().enumerate() {
                let name = name.to_ascii_lowercase();
                if !certs::covers(&cert, &name) {
                    errors.push(ConfigError {
                        path: format!("{}.names[{i}]", sni.files.at),
                        message: format!(
                            "{name:?} is not covered by {} (its names: {})",
                            sni.files.cert.display(),
                            cert.names.join(", ")
                        ),
                    });
                }
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.insert(parent.to_owned(), cert.key.clone()),
                    None => exact.insert(name, cert.key.clone()),
                };
            }
            loaded.push(cert);
        }
        let Some(default) = default else {
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let resolver = Resolver {
            default: default.key.clone(),
            exact,
            wildcard,
        };
        let mut config = ServerConfig::builder_with_provider(certs::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| {
                vec![ConfigError {
                    path: tls.default.at.clone(),
                    message: format!("TLS setup failed: {e}"),
                }]
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = if tls.http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        config.session_storage = sessions.cache.clone();
        config.ticketer = sessions.ticketer.clone();
        let mut certs = vec![default];
        certs.extend(loaded);
        Ok(Self {
            config: Arc::new(config),
            certs,
            sessions,
        })
    }

    /// The config new handshakes use.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CertFiles, SniCert};

    fn pair(dir: &Path, names: &[&str], at: &str) -> CertFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let tag = names.join("_").replace('*', "star");
        let (c, k) = (
            dir.join(format!("{tag}.pem")),
            dir.join(format!("{tag}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        CertFiles {
            cert: c,
            key: k,
            ocsp: None,
            at: at.into(),
        }
    }

    fn tls(dir: &Path) -> ListenerTls {
        ListenerTls {
            default: pair(dir, &["default.example"], "listener[0].tls"),
            sni: vec![
                SniCert {
                    names: vec!["chat.example".into()],
                    files: pair(dir, &["chat.example"], "listener[0].sni[0]"),
                },
                SniCert {
                    names: vec!["*.apps.example".into()],
                    files: pair(dir, &["*.apps.example"], "listener[0].sni[1]"),
                },
            ],
            hsts: None,
            http2: true,
        }
    }

    #[test]
    fn names_pick_their_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let t = ServerTls::build(
            &tls(dir.path()),
            SessionState::new().unwrap(),
            Path::new(""),
        )
        .unwrap();
        let names = |k: &Arc<CertifiedKey>| {
            t.certs
                .iter()
                .find(|c| Arc::ptr_eq(&c.key, k))
                .unwrap()
                .names
                .clone()
        };
        let r = Resolver {
            default: t.certs[0].key.clone(),
            exact: [("chat.example".to_owned(), t.certs[1].key.clone())].into(),
            wildcard: [("apps.example".to_owned(), t.certs[2].key.clone())].into(),
        };
        assert_eq!(names(&r.pick(Some("chat.example"))), vec!["chat.example"]);
        assert_eq!(names(&r.pick(Some("CHAT.example"))), vec!["chat.example"]);
        assert_eq!(
            names(&r.pick(Some("x.apps.example"))),
            vec!["*.apps.example"]
        );
        assert_eq!(
            names(&r.pick(Some("a.b.apps.example"))),
            vec!["default.example"]
        );
        assert_eq!(names(&r.pick(None)), vec!["default.example"]);
        assert_eq!(t.server_config().alpn_protocols.len(), 2);
    }

    #[test]
    fn an_uncovered_sni_name_is_an_error_at_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = tls(dir.path());
        t.sni[0].names.push("other.example".into());
        let e = ServerTls::build(&t, SessionState::new().unwrap(), Path::new("")).unwrap_err();
        assert_eq!(e[0].path, "listener[0].sni[0].names[1]");
        assert!(e[0].message.contains("not covered"), "{e:?}");
    }
}
