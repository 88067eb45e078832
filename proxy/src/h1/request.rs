//! Parsing an HTTP/1.x request head and deciding what it means for the proxy:
//! its target, its body framing, whether it upgrades, whether the client
//! keeps the connection — and every reason to refuse it (RFC 9112).
//!
//! Pure: works on a byte buffer and returns offsets into it, so the head is
//! never copied and never turned into a header map. Strict where leniency
//! lets one request hide inside another (request smuggling): a body framed
//! both by `Content-Length` and `Transfer-Encoding`, conflicting lengths, a
//! transfer coding other than a final `chunked`, a missing or repeated `Host`.

use http::Method;

use super::fields::{classify, Field, Known, Span};
use crate::forwarding::is_critical_end_to_end;

/// Most header fields one request may carry (431 beyond), as HAProxy's
/// default `tune.http.maxhdr` (101) order of magnitude.
pub const MAX_FIELDS: usize = 128;

/// Limits a head is checked against.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Longest request line (414 beyond).
    pub max_line: usize,
    /// Largest whole head (431 beyond).
    pub max_head: usize,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding (forwarded as is).
    Chunked,
}

/// A parsed request head. Spans point into the buffer it was parsed from.
#[derive(Debug)]
pub struct RequestHead {
    /// Bytes of the head, final CRLF CRLF included.
    pub len: usize,
    /// The method.
    pub method: Method,
    /// The request target as sent upstream: origin-form path and query, or `*`.
    pub target: Span,
    /// The authority of an absolute-form target, which overrides `Host`.
    pub authority: Option<Span>,
    /// HTTP/1.0 (else 1.1).
    pub http10: bool,
    /// Every header field, in order, classified.
    pub fields: Vec<Field>,
    /// How the body is framed.
    pub body: BodyFraming,
    /// The client wants the connection kept after this exchange.
    pub keep_alive: bool,
    /// `Upgrade: websocket` with `Connection: upgrade`.
    pub websocket: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// Why a head could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// More bytes are needed.
    #[error("incomplete request head")]
    Partial,
    /// The request line is longer than allowed.
    #[error("request line too long")]
    LineTooLong,
    /// The head is larger (or has more fields) than allowed.
    #[error("request head too large")]
    HeadTooLarge,
    /// The request is malformed or ambiguous.
    #[error("bad request: {0}")]
    Bad(&'static str),
    /// The method cannot be proxied (CONNECT).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A transfer coding we cannot forward safely.
    #[error("transfer coding not implemented")]
    NotImplemented,
}

impl HeadError {
    /// The status the client is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::Partial | HeadError::Bad(_) => 400,
            HeadError::LineTooLong => 414,
            HeadError::HeadTooLarge => 431,
            HeadError::MethodNotAllowed => 405,
            HeadError::NotImplemented => 501,
        }
    }
}

impl RequestHead {
    /// The value of the first field of kind `known`.
    pub fn value<'b>(&self, buf: &'b [u8], known: Known) -> Option<&'b [u8]> {
        self.fields
            .iter()
            .find(|f| f.known == known)
            .map(|f| f.value.of(buf))
    }

    /// Every value of the fields named `name` (case-insensitive), in order.
    pub fn values<'a, 'b: 'a>(
        &'a self,
        buf: &'b [u8],
        name: &'a str,
    ) -> impl Iterator<Item = &'b [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |f| f.name.of(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(move |f| f.value.of(buf))
    }

    /// The host the request is for: the absolute-form authority, else `Host`.
    pub fn host<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        match self.authority {
            Some(a) => a.of(buf),
            None => self.value(buf, Known::Host).unwrap_or_default(),
        }
    }

    /// The path of the target (without the query).
    pub fn path<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        let t = self.target.of(buf);
        t.split(|&b| b == b'?').next().unwrap_or(t)
    }

    /// Give the field list back for reuse by the next request.
    pub fn recycle(mut self) -> Vec<Field> {
        self.fields.clear();
        self.fields
    }
}

/// Parse the head at the start of `buf`. `fields` is reused storage (cleared
/// here). `Partial` means: read more, unless `buf` already holds the limit.
pub fn parse(
    buf: &[u8],
    limits: HeadLimits,
    mut fields: Vec<Field>,
) -> Result<RequestHead, HeadError> {
    // The request line limit is checked before anything else, so a client
    // cannot make us buffer a long line only to be told 431.
    let line_end = buf.windows(2).position(|w| w == b"\r\n");
    match line_end {
        None if buf.len() > limits.max_line => return Err(HeadError::LineTooLong),
        Some(n) if n > limits.max_line => return Err(HeadError::LineTooLong),
        _ => {}
    }
    let mut raw = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut raw);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return Err(if buf.len() >= limits.max_head {
                HeadError::HeadTooLarge
            } else {
                HeadError::Partial
            })
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::HeadTooLarge),
        Err(httparse::Error::Version) => return Err(HeadError::Bad("unsupported HTTP version")),
        Err(_) => return Err(HeadError::Bad("malformed request head")),
    };
    if len > limits.max_head {
        return Err(HeadError::HeadTooLarge);
    }
    let span = |s: &[u8]| Span::within(buf, s);
    let method_text = req.method.unwrap_or_default();
    let method =
        Method::from_bytes(method_text.as_bytes()).map_err(|_| HeadError::Bad("bad method"))?;
    if method == Method::CONNECT {
        return Err(HeadError::MethodNotAllowed);
    }
    let http10 = req.version == Some(0);
    let path = req.path.unwrap_or_default();
    let (target, authority) = split_target(buf, path)?;

    fields.clear();
    let mut hosts = 0;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut te_seen = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut conn_upgrade = false;
    let mut upgrade_ws = false;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let known = classify(h.name);
        let value = trim(h.value);
        match known {
            Known::Host => hosts += 1,
            Known::ContentLength => {
                let n = parse_length(value).ok_or(HeadError::Bad("bad Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(HeadError::Bad("conflicting Content-Length"));
                }
                length = Some(n);
            }
            Known::TransferEncoding => {
                te_seen = true;
                // Codings accumulate across fields; only a final `chunked`
                // frames a request (RFC 9112 §6.3).
                chunked = last_token(value).is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
            }
            Known::Connection => {
                for token in tokens(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        conn_keep_alive = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        conn_upgrade = true;
                    } else if is_critical_end_to_end(token) {
                        return Err(HeadError::Bad("Connection names an end-to-end header"));
                    }
                }
            }
            Known::Upgrade => {
                upgrade_ws = tokens(value).any(|t| t.eq_ignore_ascii_case(b"websocket"));
            }
            Known::Expect => {
                expect_continue = value.eq_ignore_ascii_case(b"100-continue");
            }
            _ => {}
        }
        fields.push(Field {
            name: span(h.name.as_bytes()),
            value: span(value),
            known,
        });
    }
    if !http10 && hosts != 1 && authority.is_none() {
        return Err(HeadError::Bad(if hosts == 0 {
            "missing Host"
        } else {
            "more than one Host"
        }));
    }
    if hosts > 1 {
        return Err(HeadError::Bad("more than one Host"));
    }
    let body = match (te_seen, length) {
        (true, Some(_)) => return Err(HeadError::Bad("both Content-Length and Transfer-Encoding")),
        (true, None) if http10 => return Err(HeadError::Bad("Transfer-Encoding in HTTP/1.0")),
        (true, None) if !chunked => return Err(HeadError::NotImplemented),
        (true, None) => BodyFraming::Chunked,
        (false, Some(0)) | (false, None) => BodyFraming::None,
        (false, Some(n)) => BodyFraming::Length(n),
    };
    let keep_alive = if http10 {
        conn_keep_alive && !conn_close
    } else {
        !conn_close
    };
    Ok(RequestHead {
        len,
        method,
        target,
        authority,
        http10,
        fields,
        body,
        keep_alive,
        websocket: conn_upgrade && upgrade_ws && !http10,
        expect_continue,
    })
}

/// Origin-form and `*` are kept; an absolute-form target is split into its
/// authority and its path (sent upstream in origin-form).
fn split_target(buf: &[u8], path: &str) -> Result<(Span, Option<Span>), HeadError> {
    let bytes = path.as_bytes();
    if bytes.first() == Some(&b'/') || bytes == b"*" {
        return Ok((Span::within(buf, bytes), None));
    }
    let rest = strip_prefix_ci(bytes, b"http://")
        .or_else(|| strip_prefix_ci(bytes, b"https://"))
        .ok_or(HeadError::Bad("bad request target"))?;
    let cut = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(cut);
    if authority.is_empty() || tail.first() == Some(&b'?') || tail.is_empty() {
        // `http://host` or `http://host?q`: we send `/` upstream, which needs
        // a copy; such targets are rare enough to refuse plainly.
        return Err(HeadError::Bad("absolute-form target without a path"));
    }
    Ok((Span::within(buf, tail), Some(Span::within(buf, authority))))
}

fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

fn parse_length(v: &[u8]) -> Option<u64> {
    // A list of identical values ("5, 5") is allowed by RFC 9110 §8.6.
    let mut out: Option<u64> = None;
    for part in v.split(|&b| b == b',') {
        let part = trim(part);
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: u64 = std::str::from_utf8(part).ok()?.parse().ok()?;
        if out.is_some_and(|o| o != n) {
            return None;
        }
        out = Some(n);
    }
    out
}

/// The comma-separated tokens of a list field, trimmed, empty ones skipped.
pub fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty())
}

fn last_token(v: &[u8]) -> Option<&[u8]> {
    tokens(v).last()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_line: 100,
        max_head: 400,
    };

    fn ok(text: &str) -> RequestHead {
        parse(text.as_bytes(), LIMITS, Vec::new()).unwrap()
    }

    fn err(text: &[u8]) -> HeadError {
        parse(text, LIMITS, Vec::new()).unwrap_err()
    }

    #[test]
    fn a_plain_get() {
        let text = "GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\nCookie: sid=1\r\n\r\nrest";
        let h = ok(text);
        let buf = text.as_bytes();
        assert_eq!(h.len, text.len() - 4);
        assert_eq!(h.method, Method::GET);
        assert_eq!(h.target.of(buf), b"/a/b?x=1");
        assert_eq!(h.path(buf), b"/a/b");
        assert_eq!(h.host(buf), b"h");
        assert_eq!(h.body, BodyFraming::None);
        assert!(h.keep_alive && !h.websocket && !h.http10);
        assert_eq!(h.value(buf, Known::Cookie), Some(&b"sid=1"[..]));
        assert_eq!(h.values(buf, "COOKIE").count(), 1);
    }

    #[test]
    fn body_framing() {
        let h = ok("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(h.body, BodyFraming::Length(5));
        let h = ok("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.body, BodyFraming::Chunked);
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::Bad("both Content-Length and Transfer-Encoding")
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            HeadError::Bad("conflicting Content-Length")
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n"),
            HeadError::Bad("bad Content-Length")
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            HeadError::NotImplemented
        );
    }

    #[test]
    fn host_rules() {
        assert_eq!(
            err(b"GET / HTTP/1.1\r\n\r\n"),
            HeadError::Bad("missing Host")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            HeadError::Bad("more than one Host")
        );
        let h = ok("GET / HTTP/1.0\r\n\r\n");
        assert!(h.http10 && !h.keep_alive);
        let h = ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(h.keep_alive);
        let text = "GET http://example.com:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n";
        let h = ok(text);
        assert_eq!(h.host(text.as_bytes()), b"example.com:8080");
        assert_eq!(h.target.of(text.as_bytes()), b"/p?q");
    }

    #[test]
    fn limits_give_414_and_431() {
        let long_line = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(200));
        assert_eq!(err(long_line.as_bytes()), HeadError::LineTooLong);
        assert_eq!(err(&[b'a'; 150]), HeadError::LineTooLong);
        let big = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
            "b".repeat(500)
        );
        assert_eq!(err(big.as_bytes()), HeadError::HeadTooLarge);
        let partial = format!("GET / HTTP/1.1\r\nX: {}", "b".repeat(390));
        assert_eq!(err(partial.as_bytes()), HeadError::HeadTooLarge);
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: h\r\n"), HeadError::Partial);
        let many: String = (0..200).map(|i| format!("X{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let limits = HeadLimits {
            max_line: 100,
            max_head: 100_000,
        };
        assert_eq!(
            parse(many.as_bytes(), limits, Vec::new()).unwrap_err(),
            HeadError::HeadTooLarge
        );
    }

    #[test]
    fn upgrades_and_connection_rules() {
        let h = ok("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(h.websocket);
        let h = ok("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n");
        assert!(!h.websocket);
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close, Host\r\n\r\n"),
            HeadError::Bad("Connection names an end-to-end header")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Forwarded-For\r\n\r\n"),
            HeadError::Bad("Connection names an end-to-end header")
        );
        let h = ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: close, X-Custom\r\n\r\n");
        assert!(!h.keep_alive);
        assert_eq!(
            err(b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n"),
            HeadError::MethodNotAllowed
        );
        assert_eq!(
            err(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n"),
            HeadError::Bad("unsupported HTTP version")
        );
    }
}
