//! The sticky key of a request: the first element of the pool's `hash_key`
//! chain (`cookie:NAME`, `query:NAME`, `header:NAME`, `client-ip`) that the
//! request carries.
//!
//! Values are taken raw, not percent-decoded, as nginx's `$cookie_NAME` and
//! `$arg_NAME` are, so a key lands on the same server as under nginx; empty
//! values count as absent. The key borrows from the request (no copy) except
//! for `client-ip`, which is formatted into a small inline buffer. Pure: the
//! request is seen through [`HeaderSource`], implemented for the HTTP/1
//! head and for `http::HeaderMap` (the HTTP/2 path).

use std::io::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use crate::config::HashKey;

/// Which element of the chain the key came from (logged instead of the
/// key's value, which may be a session id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeySource {
    /// `cookie:NAME`
    Cookie,
    /// `query:NAME`
    Query,
    /// `header:NAME`
    Header,
    /// `client-ip`
    ClientIp,
}

impl KeySource {
    /// The name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Cookie => "cookie",
            KeySource::Query => "query",
            KeySource::Header => "header",
            KeySource::ClientIp => "client-ip",
        }
    }
}

/// A request's sticky key.
#[derive(Debug, Clone, Copy)]
pub struct StickyKey<'a> {
    /// Where it came from.
    pub source: KeySource,
    bytes: KeyBytes<'a>,
}

#[derive(Debug, Clone, Copy)]
enum KeyBytes<'a> {
    Borrowed(&'a [u8]),
    Inline([u8; 48], u8),
}

impl StickyKey<'_> {
    /// The bytes hashed onto the ring.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.bytes {
            KeyBytes::Borrowed(b) => b,
            KeyBytes::Inline(b, n) => &b[..*n as usize],
        }
    }
}

/// Read access to a request's header fields, whatever their storage.
pub trait HeaderSource<'a> {
    /// The first value of the field `name` (lowercase), if any.
    fn first(&self, name: &str) -> Option<&'a [u8]>;
    /// Every `Cookie` field value, in order.
    fn cookies(&self) -> impl Iterator<Item = &'a [u8]>;
}

impl<'a> HeaderSource<'a> for &'a http::HeaderMap {
    fn first(&self, name: &str) -> Option<&'a [u8]> {
        self.get(name).map(|v| v.as_bytes())
    }
    fn cookies(&self) -> impl Iterator<Item = &'a [u8]> {
        self.get_all(http::header::COOKIE)
            .iter()
            .map(|v| v.as_bytes())
    }
}

/// The sticky key for a request with headers `headers`, query string
/// `query` (without `?`) and client address `client_ip`.
pub fn extract<'a>(
    chain: &[HashKey],
    headers: &impl HeaderSource<'a>,
    query: Option<&'a [u8]>,
    client_ip: IpAddr,
) -> Option<StickyKey<'a>> {
    chain.iter().find_map(|kind| match kind {
        HashKey::Cookie(name) => headers
            .cookies()
            .find_map(|v| cookie(v, name.as_bytes()))
            .map(|b| borrowed(KeySource::Cookie, b)),
        HashKey::Query(name) => query
            .and_then(|q| query_param(q, name.as_bytes()))
            .map(|b| borrowed(KeySource::Query, b)),
        HashKey::Header(name) => headers
            .first(name)
            .filter(|v| !v.is_empty())
            .map(|b| borrowed(KeySource::Header, b)),
        HashKey::ClientIp => Some(ip_key(client_ip)),
    })
}

fn borrowed(source: KeySource, bytes: &[u8]) -> StickyKey<'_> {
    StickyKey {
        source,
        bytes: KeyBytes::Borrowed(bytes),
    }
}

/// The textual address, as nginx's `$remote_addr`.
fn ip_key(ip: IpAddr) -> StickyKey<'static> {
    let mut buf = [0u8; 48];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{ip}");
    let n = cursor.position() as u8;
    StickyKey {
        source: KeySource::ClientIp,
        bytes: KeyBytes::Inline(buf, n),
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v.iter().position(|b| *b != b' ').unwrap_or(v.len());
    let e = v.iter().rposition(|b| *b != b' ').map_or(s, |e| e + 1);
    &v[s..e]
}

/// The value of cookie `name` in one `Cookie` field value.
fn cookie<'a>(value: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    value
        .split(|&b| b == b';')
        .filter_map(|pair| {
            let pair = trim(pair);
            let eq = pair.iter().position(|&b| b == b'=')?;
            Some((&pair[..eq], trim(&pair[eq + 1..])))
        })
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// The raw value of `name` in a query string.
fn query_param<'a>(query: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    query
        .split(|&b| b == b'&')
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        })
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::COOKIE;
    use http::HeaderMap;

    fn chain() -> Vec<HashKey> {
        vec![
            HashKey::Cookie("sid".into()),
            HashKey::Query("sid".into()),
            HashKey::Header("x-session-id".into()),
            HashKey::ClientIp,
        ]
    }

    fn key<'a>(c: &[HashKey], h: &'a HeaderMap, q: Option<&'a str>) -> Option<(KeySource, String)> {
        extract(c, &h, q.map(str::as_bytes), "10.1.2.3".parse().unwrap())
            .map(|k| (k.source, String::from_utf8_lossy(k.as_bytes()).into_owned()))
    }

    #[test]
    fn the_chain_takes_the_first_present() {
        let c = chain();
        let mut h = HeaderMap::new();
        h.insert("x-session-id", "hdr".parse().unwrap());
        assert_eq!(
            key(&c, &h, Some("a=1&sid=q%20v")),
            Some((KeySource::Query, "q%20v".into()))
        );
        h.append(COOKIE, "theme=dark".parse().unwrap());
        h.append(COOKIE, "x=1; sid=ck".parse().unwrap());
        assert_eq!(
            key(&c, &h, Some("sid=q")),
            Some((KeySource::Cookie, "ck".into()))
        );
        let mut h2 = HeaderMap::new();
        h2.insert("x-session-id", "hdr".parse().unwrap());
        assert_eq!(
            key(&c, &h2, Some("sid=")),
            Some((KeySource::Header, "hdr".into()))
        );
        let none = HeaderMap::new();
        assert_eq!(
            key(&c, &none, Some("sid")),
            Some((KeySource::ClientIp, "10.1.2.3".into()))
        );
        assert_eq!(key(&c[..3], &none, None), None);
    }

    #[test]
    fn ipv6_keys_are_their_text() {
        let empty = HeaderMap::new();
        let k = extract(
            &[HashKey::ClientIp],
            &&empty,
            None,
            "2001:db8::1".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(k.as_bytes(), b"2001:db8::1");
    }
}
