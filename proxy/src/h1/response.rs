//! Parsing an upstream's HTTP/1.x response head: status, framing of the body
//! that follows, whether the connection stays reusable, and whether a `101`
//! really switched to WebSocket. Pure, offsets into the buffer, like
//! [`super::request`].

use super::fields::{classify, Field, Known, Span};
use super::request::tokens;

/// Most fields an upstream response may carry.
const MAX_FIELDS: usize = 128;

/// Largest response head we accept from an upstream (nginx's
/// `proxy_buffer_size` order of magnitude, generously).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked (forwarded as is; de-chunked for an HTTP/1.0 client).
    Chunked,
    /// Until the server closes.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// Bytes of the head, final CRLF CRLF included.
    pub len: usize,
    /// The status code.
    pub status: u16,
    /// The status line, without its CRLF.
    pub status_line: Span,
    /// Every header field, in order.
    pub fields: Vec<Field>,
    /// How the body is framed.
    pub framing: ResponseFraming,
    /// The server keeps the connection open after this response.
    pub keep_alive: bool,
    /// A 101 whose `Upgrade` names `websocket`.
    pub websocket: bool,
}

/// Why a response head could not be used (the server's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// More bytes are needed.
    #[error("incomplete response head")]
    Partial,
    /// Malformed, ambiguous or too large.
    #[error("invalid response head: {0}")]
    Invalid(&'static str),
}

impl ResponseHead {
    /// The end of field `i`'s line, CRLF included (for copying lines verbatim).
    pub fn line_end(&self, i: usize) -> usize {
        match self.fields.get(i + 1) {
            Some(next) => next.name.start as usize,
            None => self.len - 2,
        }
    }
}

/// Parse the response head at the start of `buf`, for a request that was
/// `HEAD` when `head_request`.
pub fn parse(
    buf: &[u8],
    head_request: bool,
    mut fields: Vec<Field>,
) -> Result<ResponseHead, ResponseError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut raw);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_RESPONSE_HEAD => {
            return Err(ResponseError::Invalid("response head too large"))
        }
        Ok(httparse::Status::Partial) => return Err(ResponseError::Partial),
        Err(_) => return Err(ResponseError::Invalid("malformed response head")),
    };
    let status = resp.code.ok_or(ResponseError::Invalid("no status"))?;
    let http10 = resp.version == Some(0);
    let line_end = buf
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(ResponseError::Invalid("no status line"))?;
    fields.clear();
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut te = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut upgrade_ws = false;
    for h in resp.headers.iter() {
        let known = classify(h.name);
        let value = trim(h.value);
        match known {
            Known::ContentLength => {
                let n = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or(ResponseError::Invalid("bad Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(ResponseError::Invalid("conflicting Content-Length"));
                }
                length = Some(n);
            }
            Known::TransferEncoding => {
                te = true;
                chunked = tokens(value)
                    .last()
                    .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
            }
            Known::Connection => {
                for t in tokens(value) {
                    close |= t.eq_ignore_ascii_case(b"close");
                    keep_alive_token |= t.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            Known::Upgrade => {
                upgrade_ws = tokens(value).any(|t| t.eq_ignore_ascii_case(b"websocket"));
            }
            _ => {}
        }
        fields.push(Field {
            name: Span::within(buf, h.name.as_bytes()),
            value: Span::within(buf, value),
            known,
        });
    }
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if no_body {
        ResponseFraming::None
    } else if te {
        if length.is_some() {
            // RFC 9112 §6.3: Transfer-Encoding wins, but the message is
            // suspect; refuse rather than guess.
            return Err(ResponseError::Invalid(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if chunked {
            ResponseFraming::Chunked
        } else {
            ResponseFraming::UntilClose
        }
    } else if let Some(n) = length {
        ResponseFraming::Length(n)
    } else {
        ResponseFraming::UntilClose
    };
    let keep_alive = framing != ResponseFraming::UntilClose
        && if http10 {
            keep_alive_token && !close
        } else {
            !close
        };
    Ok(ResponseHead {
        len,
        status,
        status_line: Span {
            start: 0,
            end: line_end as u32,
        },
        fields,
        framing,
        keep_alive,
        websocket: status == 101 && upgrade_ws,
    })
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(s, |e| e + 1);
    &v[s..e]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str, head: bool) -> ResponseHead {
        parse(text.as_bytes(), head, Vec::new()).unwrap()
    }

    #[test]
    fn framing_and_reuse() {
        let r = ok("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false);
        assert_eq!(
            (r.status, r.framing, r.keep_alive),
            (200, ResponseFraming::Length(2), true)
        );
        let r = ok(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            false,
        );
        assert_eq!((r.framing, r.keep_alive), (ResponseFraming::Chunked, false));
        let r = ok("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(
            (r.framing, r.keep_alive),
            (ResponseFraming::UntilClose, false)
        );
        let r = ok("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true);
        assert_eq!(r.framing, ResponseFraming::None);
        let r = ok("HTTP/1.1 304 Not Modified\r\n\r\n", false);
        assert_eq!((r.framing, r.keep_alive), (ResponseFraming::None, true));
        let r = ok("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false);
        assert!(!r.keep_alive);
        let r = ok(
            "HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
            false,
        );
        assert!(r.keep_alive);
    }

    #[test]
    fn upgrades_must_name_websocket() {
        let r = ok(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            false,
        );
        assert!(r.websocket);
        let r = ok(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
            false,
        );
        assert!(!r.websocket);
    }

    #[test]
    fn bad_heads() {
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(
                matches!(
                    parse(bad.as_bytes(), false, Vec::new()),
                    Err(ResponseError::Invalid(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\n", false, Vec::new()).unwrap_err(),
            ResponseError::Partial
        );
    }

    #[test]
    fn line_ends_cover_whole_lines() {
        let text = "HTTP/1.1 200 OK\r\nA: 1  \r\nB: 2\r\n\r\n";
        let r = ok(text, false);
        assert_eq!(
            &text[r.fields[0].name.start as usize..r.line_end(0)],
            "A: 1  \r\n"
        );
        assert_eq!(
            &text[r.fields[1].name.start as usize..r.line_end(1)],
            "B: 2\r\n"
        );
    }
}
