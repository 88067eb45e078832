//! `[[listener]]`: addresses, TLS, SNI names, PROXY protocol, redirects and HSTS.

use super::*;

#[test]
fn listeners_and_routes_are_required_and_distinct() {
    let text = "[upstream.chat]\nservers = [{ addr = \"127.0.0.1:1\" }]\n";
    assert_error(text, "listener", "no [[listener]]");
    assert_error(text, "route", "no [[route]]");
    let twice = format!(
        "[[listener]]\nlisten = \"127.0.0.1:8080\"\n{}",
        with_upstream("servers = [{ addr = \"127.0.0.1:1\" }]")
    );
    assert_error(&twice, "listener[1].listen", "already used by listener[0]");
}

#[test]
fn sni_needs_tls() {
    let text = "[[listener]]\nlisten = \"127.0.0.1:8443\"\n[[listener.sni]]\nnames = [\"a.example\"]\ncert = \"c\"\nkey = \"k\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nservers = [{ addr = \"127.0.0.1:1\" }]\n";
    assert_error(text, "listener[0].sni", "need `tls`");
}

/// One listener at index 0 made of `lines` (which may add `[[listener.sni]]`
/// tables), then a valid route and pool, then `tables`.
fn listener(lines: &str, tables: &str) -> String {
    format!(
        "[[listener]]\nlisten = \"127.0.0.1:8443\"\n{lines}\n[[route]]\nupstream = \"chat\"\n[upstream.chat]\n{ONE_SERVER}\n{tables}\n"
    )
}

const TLS: &str = "tls = { cert = \"c.pem\", key = \"k.pem\" }";

#[test]
fn a_full_tls_listener_parses() {
    let text = listener(
        concat!(
            "tls = { cert = \"c.pem\", key = \"k.pem\", ocsp = \"o.der\" }\n",
            "hsts = \"max-age=31536000; includeSubDomains\"\n",
            "http2 = false\n",
            "[[listener.sni]]\n",
            "names = [\"Chat.Example.com\", \"*.example.org\"]\n",
            "cert = \"a.pem\"\nkey = \"a.key\"\nocsp = \"a.der\"\n",
            "[[listener.sni]]\n",
            "names = [\"other.example\"]\ncert = \"b.pem\"\nkey = \"b.key\"",
        ),
        "",
    );
    let c = Config::from_toml_str(&text).unwrap();
    let tls = c.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.default.ocsp, Some("o.der".into()));
    assert_eq!(tls.default.at, "listener[0].tls");
    assert_eq!(
        tls.hsts.as_deref(),
        Some("max-age=31536000; includeSubDomains")
    );
    assert!(!tls.http2);
    assert_eq!(tls.sni.len(), 2);
    assert_eq!(tls.sni[0].names, vec!["chat.example.com", "*.example.org"]);
    assert_eq!(
        tls.sni[0].files,
        CertFiles {
            cert: "a.pem".into(),
            key: "a.key".into(),
            ocsp: Some("a.der".into()),
            at: "listener[0].sni[0]".into(),
        }
    );
    assert_eq!(tls.sni[1].files.at, "listener[0].sni[1]");
    assert_eq!(tls.sni[1].files.ocsp, None);
}

#[test]
fn a_plain_listener_with_redirect_and_proxy_protocol_parses() {
    let text = listener(
        "redirect_https = 443\nredirect_except = [\"/health\", \"/.well-known/\"]\nproxy_protocol = true",
        "[limits]\ntrusted_proxies = [\"10.0.0.0/8\"]",
    );
    let l = &Config::from_toml_str(&text).unwrap().listeners[0];
    assert_eq!(l.redirect_https, Some(443));
    assert_eq!(l.redirect_except, vec!["/health", "/.well-known/"]);
    assert!(l.proxy_protocol);
    let empty = listener("redirect_https = 8443\nredirect_except = []", "");
    let l = &Config::from_toml_str(&empty).unwrap().listeners[0];
    assert!(l.redirect_except.is_empty());
}

#[test]
fn tls_needs_cert_and_key() {
    assert_error(
        &listener("tls = { cert = \"c.pem\" }", ""),
        "listener[0].tls",
        "missing field `key`",
    );
    assert_error(
        &listener("tls = { cert = \"\", key = \"k.pem\" }", ""),
        "listener[0].tls.cert",
        "must name a file",
    );
    assert_error(
        &listener(
            &format!("{TLS}\n[[listener.sni]]\nnames = [\"a.example\"]\ncert = \"c\"\nkey = \"\""),
            "",
        ),
        "listener[0].sni[0].key",
        "must name a file",
    );
    assert_error(
        &listener("tls = { cert = \"c\", key = \"k\", chain = \"x\" }", ""),
        "listener[0].tls.chain",
        "unknown key",
    );
}

#[test]
fn redirect_https_is_for_plain_listeners_only() {
    assert_error(
        &listener(&format!("{TLS}\nredirect_https = 8443"), ""),
        "listener[0].redirect_https",
        "only valid on a plain listener",
    );
    for bad in ["0", "65536", "-443"] {
        assert_error(
            &listener(&format!("redirect_https = {bad}"), ""),
            "listener[0].redirect_https",
            "must be between 1 and 65535",
        );
    }
}

#[test]
fn redirect_except_needs_redirect_https_and_absolute_prefixes() {
    assert_error(
        &listener("redirect_except = [\"/health\"]", ""),
        "listener[0].redirect_except",
        "only valid with redirect_https",
    );
    assert_error(
        &listener(
            "redirect_https = 443\nredirect_except = [\"/ok\", \"health\"]",
            "",
        ),
        "listener[0].redirect_except[1]",
        "must start with '/'",
    );
}

#[test]
fn hsts_and_http2_are_for_tls_listeners_only() {
    assert_error(
        &listener("hsts = \"max-age=60\"", ""),
        "listener[0].hsts",
        "only valid on a TLS listener",
    );
    assert_error(
        &listener("http2 = true", ""),
        "listener[0].http2",
        "only valid on a TLS listener",
    );
}

#[test]
fn hsts_values_are_checked() {
    assert_error(
        &listener(&format!("{TLS}\nhsts = \"includeSubDomains\""), ""),
        "listener[0].hsts",
        "must start with \"max-age=\"",
    );
    assert_error(
        &listener(&format!("{TLS}\nhsts = \"max-age=1y\""), ""),
        "listener[0].hsts",
        "not a whole number of seconds",
    );
    assert_error(
        &listener(
            &format!("{TLS}\nhsts = \"max-age=1\\r\\nSet-Cookie: x\""),
            "",
        ),
        "listener[0].hsts",
        "not a valid header value",
    );
}

#[test]
fn proxy_protocol_needs_trusted_proxies() {
    assert_error(
        &listener("proxy_protocol = true", ""),
        "listener[0].proxy_protocol",
        "limits.trusted_proxies, which is empty",
    );
}

#[test]
fn sni_names_are_validated() {
    let sni = |names: &str| {
        listener(
            &format!("{TLS}\n[[listener.sni]]\nnames = {names}\ncert = \"c\"\nkey = \"k\""),
            "",
        )
    };
    assert_error(
        &sni("[]"),
        "listener[0].sni[0].names",
        "at least one server name",
    );
    assert_error(
        &sni("[\"ok.example\", \"bad name\"]"),
        "listener[0].sni[0].names[1]",
        "not a valid server name",
    );
    assert_error(
        &sni("[\"a.*.example\"]"),
        "listener[0].sni[0].names[0]",
        "whole first label",
    );
    assert_error(
        &sni("[\"10.0.0.1\"]"),
        "listener[0].sni[0].names[0]",
        "IP address",
    );
    assert_error(
        &sni("[\"example.com.\"]"),
        "listener[0].sni[0].names[0]",
        "trailing dot",
    );
}

#[test]
fn duplicate_sni_names_name_both_places() {
    let text = listener(
        &format!("{TLS}\n[[listener.sni]]\nnames = [\"a.example\", \"*.example\"]\ncert = \"c\"\nkey = \"k\"\n[[listener.sni]]\nnames = [\"b.example\", \"A.Example\"]\ncert = \"c2\"\nkey = \"k2\""),
        "",
    );
    assert_error(
        &text,
        "listener[0].sni[1].names[1]",
        "duplicate server name \"a.example\": already listed at listener[0].sni[0].names[0]",
    );
    let same_entry = listener(
        &format!("{TLS}\n[[listener.sni]]\nnames = [\"*.example\", \"*.EXAMPLE\"]\ncert = \"c\"\nkey = \"k\""),
        "",
    );
    assert_error(
        &same_entry,
        "listener[0].sni[0].names[1]",
        "already listed at listener[0].sni[0].names[0]",
    );
}

#[test]
fn every_listener_problem_is_reported_even_with_a_bad_address() {
    let text = "[[listener]]\nlisten = \"nope\"\nhsts = \"max-age=1\"\nredirect_https = 0\n[[route]]\nupstream = \"u\"\n[upstream.u]\nservers = [{ addr = \"127.0.0.1:1\" }]\n";
    for path in [
        "listener[0].listen",
        "listener[0].hsts",
        "listener[0].redirect_https",
    ] {
        assert_error(text, path, "");
    }
}

#[test]
fn a_broken_limits_table_does_not_blame_proxy_protocol() {
    let errs = errors(&listener(
        "proxy_protocol = true",
        "[limits]\ntrusted_proxies = [\"nope\"]",
    ));
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, vec!["limits.trusted_proxies[0]"]);
}
