//! Answers the proxy writes itself — errors, limits, redirects — as complete
//! HTTP/1.1 responses with a short text body.

use std::fmt::Write as _;
use std::io::IoSlice;
use std::time::Duration;

use tokio::io::AsyncWrite;

use super::io::{write_all, IoFail};

/// A response the proxy makes itself.
#[derive(Debug)]
pub struct Local<'a> {
    /// The status.
    pub status: u16,
    /// Extra header lines, each `Name: value` without CRLF.
    pub headers: &'a [(&'a str, &'a str)],
    /// Close the connection after it.
    pub close: bool,
    /// `Strict-Transport-Security` to add (TLS listeners with `hsts`).
    pub hsts: Option<&'a str>,
    /// A HEAD request gets the head only.
    pub head_only: bool,
}

impl<'a> Local<'a> {
    /// A bare error status that closes the connection.
    pub fn error(status: u16) -> Self {
        Local {
            status,
            headers: &[],
            close: true,
            hsts: None,
            head_only: false,
        }
    }

    /// The response's bytes.
    pub fn render(&self) -> Vec<u8> {
        let reason = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Unknown");
        let body = format!("{} {}\n", self.status, reason);
        let mut head = String::with_capacity(256);
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
            self.status,
            reason,
            body.len()
        );
        for (name, value) in self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        if let Some(hsts) = self.hsts {
            let _ = write!(head, "Strict-Transport-Security: {hsts}\r\n");
        }
        head.push_str(if self.close {
            "Connection: close\r\n\r\n"
        } else {
            "\r\n"
        });
        let mut out = head.into_bytes();
        if !self.head_only {
            out.extend_from_slice(body.as_bytes());
        }
        out
    }

    /// Write it to `to` within `limit`.
    pub async fn send(
        &self,
        to: &mut (impl AsyncWrite + Unpin),
        limit: Duration,
    ) -> Result<(), IoFail> {
        let bytes = self.render();
        write_all(to, &mut [IoSlice::new(&bytes)], limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_status_headers_and_body() {
        let r = Local {
            status: 429,
            headers: &[("Retry-After", "2")],
            close: false,
            hsts: Some("max-age=60"),
            head_only: false,
        };
        let text = String::from_utf8(r.render()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nRetry-After: 2\r\n"));
        assert!(text.contains("\r\nStrict-Transport-Security: max-age=60\r\n"));
        assert!(text.contains("Content-Length: 22\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n429 Too Many Requests\n"));
        let closing = String::from_utf8(Local::error(502).render()).unwrap();
        assert!(closing.contains("Connection: close\r\n\r\n502 Bad Gateway\n"));
    }
}
