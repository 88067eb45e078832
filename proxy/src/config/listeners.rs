//! Validation of `[[listener]]`: addresses, TLS and SNI certificates (by
//! name and syntax only), PROXY protocol, the HTTPS redirect and HSTS.
//!
//! Certificate files are not opened here: the TLS module reads them when a
//! runtime is built and reports problems at [`CertFiles::at`]. What is
//! decided here is which keys make sense on which kind of listener.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::names;
use super::problems::Problems;
use super::raw::{RawListener, RawSni};
use super::{CertFiles, Limits, Listener, ListenerTls, SniCert};

/// What `redirect_except` holds when it is not written: ACME HTTP-01
/// challenges must reach the upstream even when everything else redirects.
const DEFAULT_REDIRECT_EXCEPT: &str = "/.well-known/acme-challenge/";

/// Every `[[listener]]`; at least one is required, and no two may share an address.
pub(super) fn validate_listeners(
    p: &mut Problems,
    raw: Vec<(String, RawListener)>,
    limits: &Limits,
) -> Vec<Listener> {
    if raw.is_empty() && !p.any_under("listener") {
        p.add(
            "listener",
            "no [[listener]]: the proxy would accept no connections",
        );
    }
    let mut seen: Vec<(SocketAddr, String)> = Vec::new();
    let mut out = Vec::new();
    for (path, l) in raw {
        let listen = p.addr(&format!("{path}.listen"), &l.listen);
        if let Some(listen) = listen {
            if let Some((_, first)) = seen.iter().find(|(a, _)| *a == listen) {
                p.add(
                    format!("{path}.listen"),
                    format!("{listen} is already used by {first}"),
                );
            }
            seen.push((listen, path.clone()));
        }
        out.extend(validate_listener(p, &path, l, limits, listen));
    }
    out
}

/// One listener, checked whole even when its address (parsed by the
/// caller) is broken; built only when the address is good.
fn validate_listener(
    p: &mut Problems,
    at: &str,
    l: RawListener,
    limits: &Limits,
    listen: Option<SocketAddr>,
) -> Option<Listener> {
    let tls_on = l.tls.is_some();
    let proxy_protocol = l.proxy_protocol.unwrap_or(false);
    // A broken [limits] table leaves the list empty; its own errors say why.
    if proxy_protocol && limits.trusted_proxies.is_empty() && !p.any_under("limits") {
        p.add(
            format!("{at}.proxy_protocol"),
            "PROXY headers are accepted only from limits.trusted_proxies, which is empty: every connection would be closed",
        );
    }
    let redirect_https = p.count_opt(&format!("{at}.redirect_https"), l.redirect_https, 1..=65535);
    if tls_on && l.redirect_https.is_some() {
        p.add(
            format!("{at}.redirect_https"),
            "only valid on a plain listener (this one has tls)",
        );
    }
    let redirect_except = match l.redirect_except {
        None => vec![DEFAULT_REDIRECT_EXCEPT.to_owned()],
        Some(prefixes) => {
            if l.redirect_https.is_none() {
                p.add(
                    format!("{at}.redirect_except"),
                    "only valid with redirect_https",
                );
            }
            for (i, prefix) in prefixes.iter().enumerate() {
                if !prefix.starts_with('/') {
                    p.add(
                        format!("{at}.redirect_except[{i}]"),
                        format!("{prefix:?} must start with '/'"),
                    );
                }
            }
            prefixes
        }
    };
    if !tls_on {
        for (key, set) in [("hsts", l.hsts.is_some()), ("http2", l.http2.is_some())] {
            if set {
                p.add(
                    format!("{at}.{key}"),
                    "only valid on a TLS listener (add tls)",
                );
            }
        }
        if !l.sni.is_empty() {
            p.add(
                format!("{at}.sni"),
                "SNI certificates need `tls` on the same listener",
            );
        }
    }
    if let Some(hsts) = &l.hsts {
        if let Err(why) = names::hsts(hsts) {
            p.add(format!("{at}.hsts"), why);
        }
    }
    let sni = validate_sni(p, at, l.sni);
    let tls = l.tls.map(|t| ListenerTls {
        default: files(p, &format!("{at}.tls"), t.cert, t.key, t.ocsp),
        sni,
        hsts: l.hsts,
        http2: l.http2.unwrap_or(true),
    });
    Some(Listener {
        listen: listen?,
        tls,
        proxy_protocol,
        redirect_https,
        redirect_except,
    })
}

fn files(
    p: &mut Problems,
    at: &str,
    cert: PathBuf,
    key: PathBuf,
    ocsp: Option<PathBuf>,
) -> CertFiles {
    for (name, path) in [
        ("cert", Some(&cert)),
        ("key", Some(&key)),
        ("ocsp", ocsp.as_ref()),
    ] {
        if path.is_some_and(|f| f.as_os_str().is_empty()) {
            p.add(format!("{at}.{name}"), "must name a file");
        }
    }
    CertFiles {
        cert,
        key,
        ocsp,
        at: at.to_owned(),
    }
}

/// `[[listener.sni]]`: names checked and lowercased; a name listed twice on
/// one listener (in one entry or two) is an error naming both places.
fn validate_sni(p: &mut Problems, at: &str, raw: Vec<RawSni>) -> Vec<SniCert> {
    let mut first_at: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for (i, s) in raw.into_iter().enumerate() {
        let entry = format!("{at}.sni[{i}]");
        if s.names.is_empty() {
            p.add(
                format!("{entry}.names"),
                "must name at least one server name",
            );
        }
        let mut names = Vec::new();
        for (j, text) in s.names.iter().enumerate() {
            let name_at = format!("{entry}.names[{j}]");
            match names::sni_name(text) {
                Err(why) => p.add(name_at, why),
                Ok(name) => {
                    if let Some(first) = first_at.get(&name) {
                        p.add(
                            name_at,
                            format!("duplicate server name {name:?}: already listed at {first}"),
                        );
                    } else {
                        first_at.insert(name.clone(), name_at);
                        names.push(name);
                    }
                }
            }
        }
        out.push(SniCert {
            names,
            files: files(p, &entry, s.cert, s.key, s.ocsp),
        });
    }
    out
}
