//! Certificate files: read, parsed and checked before they are served — the
//! chain and key load, the key matches the certificate, every SNI name is
//! covered by its certificate — with each problem named by its TOML path.
//! Also reads each certificate's expiry, for warnings and `/stats.json`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;

use crate::config::{CertFiles, ConfigError};

/// A certificate ready to serve, with what `/stats.json` shows about it.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// Chain, key and OCSP staple.
    pub key: Arc<CertifiedKey>,
    /// Where it came from (`listener[1].sni[0]`).
    pub at: String,
    /// The certificate file.
    pub file: String,
    /// The end-entity certificate's `notAfter`.
    pub not_after: SystemTime,
    /// Subject alternative names (DNS and IP), for display.
    pub names: Vec<String>,
}

impl LoadedCert {
    /// Seconds until expiry (negative when expired), at `now`.
    pub fn expires_in(&self, now: SystemTime) -> i64 {
        match self.not_after.duration_since(now) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        }
    }

    /// Whether it has expired or expires within 14 days of `now`.
    pub fn expiring(&self, now: SystemTime) -> bool {
        self.expires_in(now) < 14 * 24 * 3600
    }
}

fn err(at: &str, field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: format!("{at}.{field}"),
        message: message.into(),
    }
}

/// The ring provider every TLS config here uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read and check one certificate/key pair.
pub fn load(files: &CertFiles, base: &Path) -> Result<LoadedCert, Vec<ConfigError>> {
    let at = files.at.as_str();
    let cert_path = base.join(&files.cert);
    let key_path = base.join(&files.key);
    let mut errors = Vec::new();
    let chain: Vec<CertificateDer<'static>> = match std::fs::read(&cert_path) {
        Err(e) => {
            errors.push(err(
                at,
                "cert",
                format!("cannot read {}: {e}", cert_path.display()),
            ));
            Vec::new()
        }
        Ok(bytes) => {
            let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
            match certs {
                Ok(c) if !c.is_empty() => c,
                Ok(_) => {
                    errors.push(err(
                        at,
                        "cert",
                        format!("{} holds no PEM certificate", cert_path.display()),
                    ));
                    Vec::new()
                }
                Err(e) => {
                    errors.push(err(
                        at,
                        "cert",
                        format!("{} is not valid PEM: {e}", cert_path.display()),
                    ));
                    Vec::new()
                }
            }
        }
    };
    let key: Option<PrivateKeyDer<'static>> = match std::fs::read(&key_path) {
        Err(e) => {
            errors.push(err(
                at,
                "key",
                format!("cannot read {}: {e}", key_path.display()),
            ));
            None
        }
        Ok(bytes) => match PrivateKeyDer::from_pem_slice(&bytes) {
            Ok(k) => Some(k),
            Err(_) => {
                errors.push(err(
                    at,
                    "key",
                    format!("{} holds no PEM private key", key_path.display()),
                ));
                None
            }
        },
    };
    let ocsp = match &files.ocsp {
        None => None,
        Some(p) => match std::fs::read(base.join(p)) {
            Ok(b) if !b.is_empty() => Some(b),
            Ok(_) => {
                errors.push(err(at, "ocsp", format!("{} is empty", p.display())));
                None
            }
            Err(e) => {
                errors.push(err(at, "ocsp", format!("cannot read {}: {e}", p.display())));
                None
            }
        },
    };
    let (Some(key), false) = (key, chain.is_empty()) else {
        return Err(errors);
    };
    let provider = provider();
    let signing = match provider.key_provider.load_private_key(key) {
        Ok(k) => k,
        Err(e) => {
            errors.push(err(
                at,
                "key",
                format!("{}: unusable private key: {e}", key_path.display()),
            ));
            return Err(errors);
        }
    };
    let mut certified = CertifiedKey::new(chain.clone(), signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            errors.push(err(
                at,
                "key",
                format!(
                    "{} does not match the certificate in {}",
                    key_path.display(),
                    cert_path.display()
                ),
            ));
        }
    }
    certified.ocsp = ocsp;
    let (not_after, names) = match inspect(&chain[0]) {
        Ok(x) => x,
        Err(e) => {
            errors.push(err(at, "cert", format!("{}: {e}", cert_path.display())));
            (UNIX_EPOCH, Vec::new())
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(LoadedCert {
        key: Arc::new(certified),
        at: at.to_owned(),
        file: files.cert.display().to_string(),
        not_after,
        names,
    })
}

/// `notAfter` and the SANs of a DER certificate.
fn inspect(der: &CertificateDer<'_>) -> Result<(SystemTime, Vec<String>), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let secs = cert.validity().not_after.timestamp();
    let not_after = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => names.push((*d).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                    4 => {
                        names.push(std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string())
                    }
                    16 => {
                        let mut b = [0u8; 16];
                        b.copy_from_slice(ip);
                        names.push(std::net::Ipv6Addr::from(b).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok((not_after, names))
}

/// Whether `cert` is valid for the server name `name` (`*.example.com`
/// checks a label under it).
pub fn covers(cert: &LoadedCert, name: &str) -> bool {
    let probe = match name.strip_prefix("*.") {
        Some(rest) => format!("ringway-sni-check.{rest}"),
        None => name.to_owned(),
    };
    let Ok(server_name) = ServerName::try_from(probe.as_str()) else {
        return false;
    };
    let Some(end_entity) = cert.key.cert.first() else {
        return false;
    };
    let Ok(ee) = webpki::EndEntityCert::try_from(end_entity) else {
        return false;
    };
    ee.verify_is_valid_for_subject_name(&server_name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, names: &[&str]) -> CertFiles {
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
            at: "listener[0].tls".into(),
        }
    }

    #[test]
    fn a_good_pair_loads_with_its_names_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), &["a.example", "*.b.example"]);
        let c = load(&files, Path::new("/")).unwrap();
        assert_eq!(c.names, vec!["a.example", "*.b.example"]);
        assert!(c.expires_in(SystemTime::now()) > 0);
        assert!(covers(&c, "a.example"));
        assert!(covers(&c, "x.b.example"));
        assert!(covers(&c, "*.b.example"));
        assert!(!covers(&c, "c.example"));
    }

    #[test]
    fn each_file_problem_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let good = write_pair(dir.path(), &["a.example"]);
        let other = write_pair(dir.path(), &["z.example"]);
        let missing = CertFiles {
            cert: dir.path().join("nope.pem"),
            ..good.clone()
        };
        let e = load(&missing, Path::new("/")).unwrap_err();
        assert_eq!(e[0].path, "listener[0].tls.cert");
        assert!(e[0].message.contains("cannot read"), "{e:?}");
        let no_cert = CertFiles {
            cert: good.key.clone(),
            ..good.clone()
        };
        let e = load(&no_cert, Path::new("/")).unwrap_err();
        assert!(e[0].message.contains("no PEM certificate"), "{e:?}");
        let no_key = CertFiles {
            key: good.cert.clone(),
            ..good.clone()
        };
        let e = load(&no_key, Path::new("/")).unwrap_err();
        assert_eq!(e[0].path, "listener[0].tls.key");
        assert!(e[0].message.contains("no PEM private key"), "{e:?}");
        let mismatch = CertFiles {
            key: other.key.clone(),
            ..good.clone()
        };
        let e = load(&mismatch, Path::new("/")).unwrap_err();
        assert!(e[0].message.contains("does not match"), "{e:?}");
    }
}
