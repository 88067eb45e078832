//! Pure checks of the strings a config hands to other parts of the stack:
//! TLS server names, Host header values, request paths, tokens, pool names
//! and `Strict-Transport-Security` values.
//!
//! Each check is as strict as the consumer that would otherwise fail (or
//! panic) at run time — rustls for server names, `http` for paths, Pingora's
//! header builder for Host — so a value accepted here is one that works.
//! Each returns why a value is refused, for the caller to put at its TOML
//! path; none of them records anything or touches the file system.

use std::str::FromStr;

use rustls_pki_types::ServerName;

/// A certificate name for `[[listener.sni]] names`: an exact DNS name or a
/// `*.domain` wildcard, returned lowercased. IP literals cannot be sent as
/// SNI (RFC 6066 §3), so they are refused.
pub(super) fn sni_name(text: &str) -> Result<String, String> {
    let name = text.to_ascii_lowercase();
    let base = name.strip_prefix("*.").unwrap_or(&name);
    let refuse = |why: &str| Err(format!("{text:?} is not a valid server name: {why}"));
    if base.ends_with('.') {
        return refuse("write it without the trailing dot");
    }
    if base.contains('*') {
        return refuse("a wildcard may only be a whole first label, as in \"*.example.com\"");
    }
    match ServerName::try_from(base) {
        Ok(ServerName::DnsName(_)) => Ok(name),
        Ok(_) => refuse("an IP address cannot be a TLS server name (SNI)"),
        Err(_) => refuse("expected a DNS name such as \"chat.example.com\" or \"*.example.com\""),
    }
}

/// The name an upstream's certificate is verified against and sent as SNI:
/// a DNS name or an IP literal, never empty (Pingora's rustls connector
/// skips verification on an empty SNI).
pub(super) fn upstream_sni(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err(
            "must not be empty: an empty SNI turns certificate verification off in Pingora"
                .to_owned(),
        );
    }
    match ServerName::try_from(text) {
        Ok(_) => Ok(()),
        Err(_) => Err(format!("{text:?} is neither a DNS name nor an IP address")),
    }
}

/// A Host header value for health checks: visible ASCII, no spaces, no
/// control characters (Pingora's checker panics on its first tick otherwise).
pub(super) fn host_header(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{text:?} is not a valid Host header value: visible ASCII only, no spaces or control characters"
        ));
    }
    Ok(())
}

/// A request target in origin form (`/path?query`), as sent by a health check.
pub(super) fn request_path(text: &str) -> Result<(), String> {
    if !text.starts_with('/') {
        return Err(format!("{text:?} must start with '/'"));
    }
    match http::uri::PathAndQuery::from_str(text) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("{text:?} is not a valid HTTP path: {e}")),
    }
}

/// Shortest admin token accepted: long enough not to be guessed online.
pub(super) const MIN_TOKEN_LEN: usize = 16;

/// The admin Bearer token: at least [`MIN_TOKEN_LEN`] characters of
/// printable ASCII without spaces (RFC 6750 `b64token` is narrower still;
/// this keeps the header valid and the token easy to paste).
pub(super) fn admin_token(text: &str) -> Result<(), String> {
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces".to_owned());
    }
    if text.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "must be at least {MIN_TOKEN_LEN} characters (it is {})",
            text.len()
        ));
    }
    Ok(())
}

/// Longest `[upstream.NAME]` name.
const MAX_POOL_NAME: usize = 64;

/// An upstream name: it appears in admin URLs (`/api/upstreams/NAME/…`),
/// metric labels and log lines, so letters, digits, `-`, `_` and `.` only.
pub(super) fn pool_name(text: &str) -> Result<(), String> {
    let ok = !text.is_empty()
        && text.len() <= MAX_POOL_NAME
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "upstream name {text:?} must be 1 to {MAX_POOL_NAME} letters, digits, '-', '_' or '.' (it appears in admin URLs and metric labels)"
        ))
    }
}

/// A `Strict-Transport-Security` value: `max-age=SECONDS` first, then
/// optional directives; a valid header value.
pub(super) fn hsts(text: &str) -> Result<(), String> {
    if !text.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(format!(
            "{text:?} is not a valid header value: visible ASCII and spaces only"
        ));
    }
    let Some(rest) = text.strip_prefix("max-age=") else {
        return Err(format!(
            "{text:?} must start with \"max-age=\" (e.g. \"max-age=31536000; includeSubDomains\")"
        ));
    };
    let age = rest.split(';').next().unwrap_or_default().trim();
    match age.parse::<u64>() {
        Ok(_) => Ok(()),
        Err(_) => Err(format!("max-age {age:?} is not a whole number of seconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_names_are_dns_names_or_wildcards_lowercased() {
        assert_eq!(sni_name("Chat.Example.com").unwrap(), "chat.example.com");
        assert_eq!(sni_name("*.Example.com").unwrap(), "*.example.com");
        assert!(sni_name("localhost").is_ok());
        for bad in [
            "",
            "*.",
            "a..b",
            "-a.com",
            "a.*.com",
            "**.a.com",
            "a b.com",
            "127.0.0.1",
            "a.com.",
            "x\u{1}.com",
        ] {
            assert!(sni_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(sni_name("127.0.0.1").unwrap_err().contains("IP address"));
    }

    #[test]
    fn upstream_sni_takes_names_and_ips() {
        assert!(upstream_sni("backend.internal").is_ok());
        assert!(upstream_sni("10.0.0.1").is_ok());
        assert!(upstream_sni("::1").is_ok());
        assert!(upstream_sni("").unwrap_err().contains("verification off"));
        assert!(upstream_sni("a b").is_err());
    }

    #[test]
    fn host_headers_are_visible_ascii() {
        assert!(host_header("localhost").is_ok());
        assert!(host_header("app.internal:8080").is_ok());
        for bad in ["", "a b", "a\tb", "a\r\nX-Evil: 1", "caf\u{e9}", "a\u{7f}"] {
            assert!(host_header(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn request_paths_parse_as_origin_form() {
        assert!(request_path("/health").is_ok());
        assert!(request_path("/health?deep=1").is_ok());
        assert!(request_path("health")
            .unwrap_err()
            .contains("start with '/'"));
        for bad in ["/a b", "/\u{0}", "/a\nb", "/\u{7f}"] {
            assert!(request_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tokens_are_long_printable_and_spaceless() {
        assert!(admin_token("0123456789abcdef").is_ok());
        assert!(admin_token("short").unwrap_err().contains("at least 16"));
        assert!(admin_token("0123456789 abcdef")
            .unwrap_err()
            .contains("without spaces"));
        assert!(admin_token("0123456789abcdef\u{e9}").is_err());
    }

    #[test]
    fn pool_names_are_url_and_label_safe() {
        assert!(pool_name("chat-v2_eu.1").is_ok());
        for bad in ["", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(pool_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn hsts_values_start_with_an_integer_max_age() {
        assert!(hsts("max-age=31536000").is_ok());
        assert!(hsts("max-age=63072000; includeSubDomains; preload").is_ok());
        assert!(hsts("includeSubDomains").unwrap_err().contains("max-age="));
        assert!(hsts("max-age=soon").unwrap_err().contains("whole number"));
        assert!(hsts("max-age=-1").is_err());
        assert!(hsts("max-age=1\r\nX: y").is_err());
    }
}
