//! Who may change a server's state through the admin listener: the Bearer
//! token (RFC 6750), and the request's `Host` and `Origin`, so that a web
//! page in the operator's browser cannot drive the admin API (cross-site
//! request forgery, DNS rebinding) even on a loopback listener.
//!
//! Pure decisions over header values; unit-tested without sockets. Only
//! state-changing requests go through here; reading stats needs neither.

use std::net::{IpAddr, SocketAddr};

use subtle::ConstantTimeEq;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401: no Bearer credentials (`error` is `None`, RFC 6750 §3.1: no
    /// error code when the request carried no credentials) or a wrong
    /// token (`invalid_token`).
    Unauthorized {
        /// The RFC 6750 error code, if any.
        error: Option<&'static str>,
    },
    /// 403: the request may not come from where it comes from.
    Forbidden(String),
}

impl Denied {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Denied::Unauthorized { .. } => 401,
            Denied::Forbidden(_) => 403,
        }
    }

    /// The `WWW-Authenticate` challenge, for a 401.
    pub fn challenge(&self) -> Option<String> {
        match self {
            Denied::Unauthorized { error: None } => Some(r#"Bearer realm="ringway""#.to_owned()),
            Denied::Unauthorized { error: Some(e) } => Some(format!(
                r#"Bearer realm="ringway", error="{e}", error_description="the token is not the configured admin.token""#
            )),
            Denied::Forbidden(_) => None,
        }
    }

    /// A sentence for the JSON answer.
    pub fn message(&self) -> String {
        match self {
            Denied::Unauthorized { error: None } => {
                "an Authorization: Bearer <admin.token> header is required".to_owned()
            }
            Denied::Unauthorized { .. } => "the Bearer token is wrong".to_owned(),
            Denied::Forbidden(why) => why.clone(),
        }
    }
}

/// Check `Authorization` against the configured token. With no token
/// configured, anything passes (the listener is then loopback-only, see
/// [`check_exposure`]). The comparison takes the same time wherever the
/// first differing byte is.
pub fn check_token(expected: Option<&str>, authorization: Option<&[u8]>) -> Result<(), Denied> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = authorization.and_then(bearer);
    let Some(given) = given else {
        return Err(Denied::Unauthorized { error: None });
    };
    if bool::from(given.ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(Denied::Unauthorized {
            error: Some("invalid_token"),
        })
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is
/// case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    Some(rest.trim_ascii())
}

/// Refuse state changes on a listener reachable from other machines when no
/// token protects it. Config validation refuses that setup at start; this
/// keeps the API closed even if a config slipped through.
pub fn check_exposure(listen: SocketAddr, token_set: bool) -> Result<(), Denied> {
    if token_set || listen.ip().to_canonical().is_loopback() {
        Ok(())
    } else {
        Err(Denied::Forbidden(format!(
            "admin.listen {listen} is not a loopback address and admin.token is not set"
        )))
    }
}

/// An authority (`host[:port]`) split into a lowercased name and a port
/// (80 when absent: the admin listener speaks plain HTTP).
fn authority(text: &str) -> Option<(String, u16)> {
    let text = text.trim();
    let (name, port) = if let Some(rest) = text.strip_prefix('[') {
        let end = rest.find(']')?;
        let name = &text[..end + 2];
        match &rest[end + 1..] {
            "" => (name, None),
            p => (name, Some(p.strip_prefix(':')?)),
        }
    } else {
        match text.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (text, None),
        }
    };
    if name.is_empty() {
        return None;
    }
    let port = match port {
        None => 80,
        Some(p) => p.parse().ok()?,
    };
    Some((name.to_ascii_lowercase(), port))
}

/// Whether `name` is an IP literal (`[v6]` or v4).
fn ip_literal(name: &str) -> Option<IpAddr> {
    name.strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name)
        .parse()
        .ok()
}

/// Whether `host` names the admin listener `listen`: its own address; for a
/// loopback listener also `localhost`, `127.0.0.1` and `[::1]`; for a
/// wildcard listener (`0.0.0.0`, `[::]`) any IP literal or `localhost`. The
/// port must be the listener's. A DNS name other than `localhost` never
/// passes, which is what defeats DNS rebinding.
fn host_is_admin(listen: SocketAddr, host: &str) -> bool {
    let Some((name, port)) = authority(host) else {
        return false;
    };
    if port != listen.port() {
        return false;
    }
    let ip = listen.ip().to_canonical();
    match ip_literal(&name) {
        Some(given) => {
            let given = given.to_canonical();
            given == ip || (ip.is_loopback() && given.is_loopback()) || ip.is_unspecified()
        }
        None => name == "localhost" && (ip.is_loopback() || ip.is_unspecified()),
    }
}

/// Check that a state-changing request was addressed to the admin listener
/// (`Host`) and, when the browser says where it comes from (`Origin`), that
/// it comes from the admin's own pages.
pub fn check_origin(
    listen: SocketAddr,
    host: Option<&str>,
    origin: Option<&str>,
) -> Result<(), Denied> {
    let Some(host) = host.filter(|h| host_is_admin(listen, h)) else {
        return Err(Denied::Forbidden(format!(
            "Host {:?} is not the admin listener's address ({listen}); refused (DNS rebinding)",
            host.unwrap_or("")
        )));
    };
    let Some(origin) = origin else {
        return Ok(());
    };
    let same = origin
        .strip_prefix("http://")
        .and_then(authority)
        .is_some_and(|o| Some(o) == authority(host));
    if same {
        Ok(())
    } else {
        Err(Denied::Forbidden(format!(
            "Origin {origin:?} is not the admin listener's own (http://{host}); refused (cross-site request)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret-token-of-some-length";

    #[test]
    fn token_missing_wrong_and_right() {
        assert_eq!(check_token(None, None), Ok(()));
        let missing = check_token(Some(TOKEN), None).unwrap_err();
        assert_eq!(missing.status(), 401);
        assert_eq!(missing.challenge().unwrap(), r#"Bearer realm="ringway""#);
        let basic = check_token(Some(TOKEN), Some(b"Basic dXNlcjpwYXNz"));
        assert_eq!(basic, Err(Denied::Unauthorized { error: None }));
        let wrong =
            check_token(Some(TOKEN), Some(b"Bearer s3cret-token-of-some-lengtH")).unwrap_err();
        assert!(wrong
            .challenge()
            .unwrap()
            .contains(r#"error="invalid_token""#));
        let short = check_token(Some(TOKEN), Some(b"Bearer s3cret"));
        assert!(short.is_err());
        let right = format!("bearer  {TOKEN} ");
        assert_eq!(check_token(Some(TOKEN), Some(right.as_bytes())), Ok(()));
    }

    #[test]
    fn exposure_needs_a_token_off_loopback() {
        let lo: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9090".parse().unwrap();
        assert!(check_exposure(lo, false).is_ok());
        assert!(check_exposure(any, true).is_ok());
        assert_eq!(check_exposure(any, false).unwrap_err().status(), 403);
    }

    #[test]
    fn host_must_be_the_admin_address() {
        let lo: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        for ok in [
            "127.0.0.1:9090",
            "localhost:9090",
            "LOCALHOST:9090",
            "[::1]:9090",
        ] {
            assert!(check_origin(lo, Some(ok), None).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example:9090",
            "127.0.0.1:9091",
            "127.0.0.1",
            "localhost.evil.example:9090",
            "",
        ] {
            assert_eq!(
                check_origin(lo, Some(bad), None).unwrap_err().status(),
                403,
                "{bad}"
            );
        }
        assert!(check_origin(lo, None, None).is_err());
        let v6: SocketAddr = "[::1]:9090".parse().unwrap();
        assert!(check_origin(v6, Some("[::1]:9090"), None).is_ok());
        assert!(check_origin(v6, Some("localhost:9090"), None).is_ok());
        let wide: SocketAddr = "10.0.0.5:9090".parse().unwrap();
        assert!(check_origin(wide, Some("10.0.0.5:9090"), None).is_ok());
        assert!(check_origin(wide, Some("127.0.0.1:9090"), None).is_err());
        assert!(check_origin(wide, Some("admin.example:9090"), None).is_err());
        let any: SocketAddr = "0.0.0.0:9090".parse().unwrap();
        assert!(check_origin(any, Some("192.0.2.7:9090"), None).is_ok());
        assert!(check_origin(any, Some("rebound.example:9090"), None).is_err());
        let port80: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert!(check_origin(port80, Some("localhost"), None).is_ok());
    }

    #[test]
    fn origin_must_be_the_admin_itself() {
        let lo: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        let host = Some("127.0.0.1:9090");
        assert!(check_origin(lo, host, Some("http://127.0.0.1:9090")).is_ok());
        for bad in [
            "http://evil.example",
            "null",
            "https://127.0.0.1:9090",
            "http://localhost:9090",
            "http://127.0.0.1:9091",
        ] {
            assert!(check_origin(lo, host, Some(bad)).is_err(), "{bad}");
        }
    }
}
