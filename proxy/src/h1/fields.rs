//! Header fields as offsets into the buffer they arrived in, each classified
//! once by name, so the rest of the HTTP/1 path asks "is this `Connection`?"
//! with an enum compare instead of string compares, and never copies a head
//! into a map.

/// A byte range of a buffer (u32: heads are far below 4 GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    /// The span of `part`, which must be a sub-slice of `buf`.
    pub fn within(buf: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
        let start = start.min(buf.len());
        Span {
            start: start as u32,
            end: (start + part.len()).min(buf.len()) as u32,
        }
    }

    /// The bytes of this span in `buf`.
    pub fn of<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
}

/// The header fields the proxy treats specially; everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Any other field: forwarded as is.
    Other,
    /// `Host`
    Host,
    /// `Connection`
    Connection,
    /// `Keep-Alive`
    KeepAlive,
    /// `Proxy-Connection`
    ProxyConnection,
    /// `Upgrade`
    Upgrade,
    /// `TE`
    Te,
    /// `Trailer`
    Trailer,
    /// `Transfer-Encoding`
    TransferEncoding,
    /// `Content-Length`
    ContentLength,
    /// `Proxy-Authorization`
    ProxyAuthorization,
    /// `Proxy-Authenticate`
    ProxyAuthenticate,
    /// `Expect`
    Expect,
    /// `Cookie`
    Cookie,
    /// `X-Forwarded-For`
    XForwardedFor,
    /// `X-Forwarded-Proto`
    XForwardedProto,
    /// `X-Forwarded-Host`
    XForwardedHost,
    /// `X-Forwarded-Port`
    XForwardedPort,
    /// `Forwarded`
    Forwarded,
    /// `X-Real-IP`
    XRealIp,
    /// `X-Request-Id`
    XRequestId,
    /// `Strict-Transport-Security`
    StrictTransportSecurity,
}

impl Known {
    /// Fields that describe one hop only and never cross the proxy
    /// (RFC 9110 §7.6.1, plus the legacy ones nginx and HAProxy drop).
    /// `Transfer-Encoding` is not in the list: bodies are forwarded with
    /// their framing, so the coding travels with them.
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Known::Connection
                | Known::KeepAlive
                | Known::ProxyConnection
                | Known::Upgrade
                | Known::Te
                | Known::Trailer
                | Known::ProxyAuthorization
                | Known::ProxyAuthenticate
        )
    }
}

/// A header field: where its name and value are, and what it is.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The name as sent.
    pub name: Span,
    /// The value, surrounding whitespace trimmed.
    pub value: Span,
    /// The classification of the name.
    pub known: Known,
}

/// Classify a field name (case-insensitive).
pub fn classify(name: &str) -> Known {
    let n = name.as_bytes();
    let is = |s: &str| n.eq_ignore_ascii_case(s.as_bytes());
    match n.len() {
        2 if is("te") => Known::Te,
        4 if is("host") => Known::Host,
        6 if is("cookie") => Known::Cookie,
        6 if is("expect") => Known::Expect,
        7 if is("upgrade") => Known::Upgrade,
        7 if is("trailer") => Known::Trailer,
        9 if is("forwarded") => Known::Forwarded,
        9 if is("x-real-ip") => Known::XRealIp,
        10 if is("connection") => Known::Connection,
        10 if is("keep-alive") => Known::KeepAlive,
        12 if is("x-request-id") => Known::XRequestId,
        14 if is("content-length") => Known::ContentLength,
        15 if is("x-forwarded-for") => Known::XForwardedFor,
        16 if is("proxy-connection") => Known::ProxyConnection,
        16 if is("x-forwarded-host") => Known::XForwardedHost,
        16 if is("x-forwarded-port") => Known::XForwardedPort,
        17 if is("transfer-encoding") => Known::TransferEncoding,
        17 if is("x-forwarded-proto") => Known::XForwardedProto,
        18 if is("proxy-authenticate") => Known::ProxyAuthenticate,
        19 if is("proxy-authorization") => Known::ProxyAuthorization,
        25 if is("strict-transport-security") => Known::StrictTransportSecurity,
        _ => Known::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_classify_case_insensitively() {
        assert_eq!(classify("HOST"), Known::Host);
        assert_eq!(classify("X-Forwarded-For"), Known::XForwardedFor);
        assert_eq!(classify("x-forwarded-port"), Known::XForwardedPort);
        assert_eq!(classify("Transfer-Encoding"), Known::TransferEncoding);
        assert_eq!(classify("X-Custom"), Known::Other);
        assert!(classify("Keep-Alive").is_hop_by_hop());
        assert!(!classify("Transfer-Encoding").is_hop_by_hop());
    }

    #[test]
    fn spans_point_into_their_buffer() {
        let buf = b"hello world";
        let s = Span::within(buf, &buf[6..]);
        assert_eq!(s.of(buf), b"world");
        assert_eq!(Span::default().of(buf), b"");
    }
}
