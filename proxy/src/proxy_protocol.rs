//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1
//! and 2) that a trusted load balancer sends before the client's bytes, to
//! say whom it is relaying.
//!
//! Owns reading that header and nothing after it: [`parse`] is a pure
//! decision over the bytes received so far, and [`read_header`] takes the
//! header off a `TcpStream` within a deadline, consuming exactly the
//! header's bytes so the stream is left at the client's first byte. It never
//! decides whether a peer may send a header (that is the listener's
//! `trusted_proxies` check, made before calling it) and never reads past the
//! header. Parsing of the two formats is the `ppp` crate's; this module adds
//! the framing, the size caps and the rules below.
//!
//! Rules: a v1 header is at most 107 bytes, a v2 header at most 16 bytes of
//! preamble, 216 of addresses and [`V2_MAX_TLV_BYTES`] of TLVs; anything
//! else — wrong signature, version, command, family or protocol, a datagram
//! header on a stream — is refused as soon as the bytes show it. `LOCAL`
//! (v2) and `UNKNOWN`/`UNSPEC`/`UNIX` headers carry no usable client: the
//! source is `None` and the caller keeps the peer address. IPv4-mapped IPv6
//! addresses are given as IPv4.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ppp::v2::{Command, Protocol};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest v1 header, `\r\n` included (the specification's figure).
pub const V1_MAX_BYTES: usize = 107;
/// The fixed part of a v2 header: signature, version/command,
/// family/protocol, length.
pub const V2_PREAMBLE_BYTES: usize = 16;
/// TLV bytes accepted after a v2 header's addresses; the format allows 64
/// KiB, but nothing a proxy sends (ALPN, authority, unique id, TLS facts)
/// needs more than this.
pub const V2_MAX_TLV_BYTES: usize = 4096;

const V1_SIGNATURE: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A complete header: its length and whom it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Bytes the header takes at the start of the stream.
    pub header_len: usize,
    /// The client, or `None` when the header names no usable one (`LOCAL`,
    /// `UNKNOWN`, `UNSPEC`, `UNIX`): the peer address stands.
    pub source: Option<SocketAddr>,
    /// The address the client connected to, when given.
    pub destination: Option<SocketAddr>,
}

/// What the bytes received so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A valid beginning; more bytes are needed.
    Incomplete,
    /// Not a PROXY header, or a broken one: close the connection.
    Invalid(Invalid),
    /// A whole header.
    Complete(ProxyHeader),
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The bytes start like neither version's signature.
    #[error("not a PROXY protocol header")]
    Signature,
    /// No end of line within 107 bytes.
    #[error("PROXY v1 header longer than {V1_MAX_BYTES} bytes")]
    V1TooLong,
    /// A v1 line that does not parse.
    #[error("malformed PROXY v1 header: {0}")]
    V1(String),
    /// A v2 version other than 2.
    #[error("PROXY v2 header with version {0}")]
    V2Version(u8),
    /// A v2 command other than LOCAL (0) and PROXY (1).
    #[error("PROXY v2 header with command {0:#x}")]
    V2Command(u8),
    /// An unknown address family or transport protocol, or a datagram
    /// header on a stream connection.
    #[error("PROXY v2 header with family/protocol byte {0:#04x}")]
    V2Family(u8),
    /// More TLV bytes than [`V2_MAX_TLV_BYTES`].
    #[error("PROXY v2 header carries {0} bytes of TLVs, more than {V2_MAX_TLV_BYTES}")]
    V2TooLong(usize),
    /// A v2 header whose length or TLVs do not add up.
    #[error("malformed PROXY v2 header: {0}")]
    V2(String),
}

/// Decide what `buf`, the first bytes of a connection, holds.
pub fn parse(buf: &[u8]) -> Parsed {
    match buf.first() {
        None => Parsed::Incomplete,
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Parsed::Invalid(Invalid::Signature),
    }
}

/// Whether `buf` could still become `signature` (or already starts with it).
fn matches_signature(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf[..n] == signature[..n]
}

fn parse_v1(buf: &[u8]) -> Parsed {
    use ppp::v1::{Addresses, Header};
    if !matches_signature(buf, V1_SIGNATURE) {
        return Parsed::Invalid(Invalid::Signature);
    }
    let window = &buf[..buf.len().min(V1_MAX_BYTES)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= V1_MAX_BYTES {
            return Parsed::Invalid(Invalid::V1TooLong);
        }
        // Refuse a broken beginning early ("PROXY TCP5 …"); the rest of the
        // line is judged once it has ended.
        return if v1_protocol_may_follow(&buf[V1_SIGNATURE.len().min(buf.len())..]) {
            Parsed::Incomplete
        } else {
            Parsed::Invalid(Invalid::V1("unknown protocol".into()))
        };
    };
    let line = &buf[..=lf];
    let header = match Header::try_from(line) {
        Ok(h) if h.header.len() == line.len() => h,
        Ok(_) => return Parsed::Invalid(Invalid::V1("a CR before the end of line".into())),
        Err(e) => return Parsed::Invalid(Invalid::V1(e.to_string())),
    };
    let named = match header.addresses {
        Addresses::Tcp4(a) => Some(endpoints_v4(a)),
        Addresses::Tcp6(a) => Some(endpoints_v6(a)),
        Addresses::Unknown => None,
    };
    complete(line.len(), named)
}

/// Whether `rest`, the bytes after `PROXY `, can still start with one of
/// the protocol words of a v1 header.
fn v1_protocol_may_follow(rest: &[u8]) -> bool {
    [&b"TCP4 "[..], b"TCP6 ", b"UNKNOWN"]
        .iter()
        .any(|word| matches_signature(rest, word))
}

fn parse_v2(buf: &[u8]) -> Parsed {
    use ppp::v2::{Addresses, Header};
    if !matches_signature(buf, V2_SIGNATURE) {
        return Parsed::Invalid(Invalid::Signature);
    }
    if buf.len() < V2_PREAMBLE_BYTES {
        return Parsed::Incomplete;
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Parsed::Invalid(Invalid::V2Version(version));
    }
    if command > 1 {
        return Parsed::Invalid(Invalid::V2Command(command));
    }
    let family = buf[13];
    let address_bytes = match family >> 4 {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        _ => return Parsed::Invalid(Invalid::V2Family(family)),
    };
    if family & 0x0f > 2 {
        return Parsed::Invalid(Invalid::V2Family(family));
    }
    let length = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let Some(tlv_bytes) = length.checked_sub(address_bytes) else {
        return Parsed::Invalid(Invalid::V2(format!(
            "length {length} cannot hold the {address_bytes} address bytes"
        )));
    };
    if tlv_bytes > V2_MAX_TLV_BYTES {
        return Parsed::Invalid(Invalid::V2TooLong(tlv_bytes));
    }
    let total = V2_PREAMBLE_BYTES + length;
    if buf.len() < total {
        return Parsed::Incomplete;
    }
    let header = match Header::try_from(&buf[..total]) {
        Ok(h) => h,
        Err(e) => return Parsed::Invalid(Invalid::V2(e.to_string())),
    };
    if let Some(Err(e)) = header.tlvs().find(Result::is_err) {
        return Parsed::Invalid(Invalid::V2(e.to_string()));
    }
    if header.command == Command::Local {
        return complete(total, None);
    }
    if header.protocol == Protocol::Datagram {
        return Parsed::Invalid(Invalid::V2Family(family));
    }
    let named = match header.addresses {
        Addresses::IPv4(a) => Some(endpoints_v4(a)),
        Addresses::IPv6(a) => Some(endpoints_v6(a)),
        Addresses::Unspecified | Addresses::Unix(_) => None,
    };
    complete(total, named)
}

/// The client and the address it connected to, as a header names them.
type Endpoints = (SocketAddr, SocketAddr);

fn endpoints_v4(a: ppp::v2::IPv4) -> Endpoints {
    let source = SocketAddr::from((a.source_address, a.source_port));
    (source, (a.destination_address, a.destination_port).into())
}

fn endpoints_v6(a: ppp::v2::IPv6) -> Endpoints {
    let source = SocketAddr::from((a.source_address, a.source_port));
    (source, (a.destination_address, a.destination_port).into())
}

fn complete(header_len: usize, named: Option<Endpoints>) -> Parsed {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    Parsed::Complete(ProxyHeader {
        header_len,
        source: named.map(|(s, _)| canonical(s)),
        destination: named.map(|(_, d)| canonical(d)),
    })
}

/// Why [`read_header`] gave up; in every case the connection should close.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The header did not arrive within the deadline.
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    /// The peer closed before the header ended.
    #[error("connection closed before the PROXY header ended")]
    Closed,
    /// The bytes are not a valid header.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The socket failed.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
}

/// Read the PROXY header at the start of `stream` within `deadline`.
///
/// Consumes exactly the header: a v2 header announces its length, and a v1
/// header is read up to its line feed after peeking where that is, so the
/// client's own bytes stay in the socket for whatever reads next. At most
/// `16 + 216 + V2_MAX_TLV_BYTES` bytes are buffered. Garbage is refused at
/// its first wrong byte.
pub async fn read_header(
    stream: &mut TcpStream,
    deadline: Duration,
) -> Result<ProxyHeader, ReadError> {
    tokio::time::timeout(deadline, read_exactly_the_header(stream))
        .await
        .map_err(|_| ReadError::Timeout(deadline))?
}

async fn read_exactly_the_header(stream: &mut TcpStream) -> Result<ProxyHeader, ReadError> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Err(ReadError::Closed);
    }
    match first[0] {
        b'\r' => read_v2(stream).await,
        b'P' => read_v1(stream).await,
        _ => Err(Invalid::Signature.into()),
    }
}

/// A v2 header: the preamble (every valid header has one), then the length
/// it announces, once the preamble has passed the checks.
async fn read_v2(stream: &mut TcpStream) -> Result<ProxyHeader, ReadError> {
    let mut head = vec![0u8; V2_PREAMBLE_BYTES];
    read_exact(stream, &mut head).await?;
    loop {
        match parse(&head) {
            Parsed::Complete(h) => return Ok(h),
            Parsed::Invalid(e) => return Err(e.into()),
            Parsed::Incomplete if head.len() > V2_PREAMBLE_BYTES => {
                return Err(Invalid::V2("shorter than its length".into()).into())
            }
            Parsed::Incomplete => {
                let length = usize::from(u16::from_be_bytes([head[14], head[15]]));
                head.resize(V2_PREAMBLE_BYTES + length, 0);
                read_exact(stream, &mut head[V2_PREAMBLE_BYTES..]).await?;
            }
        }
    }
}

/// A v1 header: peek for the line feed and take the bytes up to it, never
/// more than 107 in all.
async fn read_v1(stream: &mut TcpStream) -> Result<ProxyHeader, ReadError> {
    let mut head = Vec::with_capacity(V1_MAX_BYTES);
    let mut peeked = [0u8; V1_MAX_BYTES];
    loop {
        // `parse` refuses a line of 107 bytes without an end, so room is left.
        let room = V1_MAX_BYTES - head.len();
        let n = stream.peek(&mut peeked[..room]).await?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        let take = peeked[..n]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(n, |lf| lf + 1);
        let start = head.len();
        head.resize(start + take, 0);
        read_exact(stream, &mut head[start..]).await?;
        match parse(&head) {
            Parsed::Complete(h) => return Ok(h),
            Parsed::Invalid(e) => return Err(e.into()),
            Parsed::Incomplete if head.ends_with(b"\n") => {
                return Err(Invalid::V1("the line ends early".into()).into())
            }
            Parsed::Incomplete => {}
        }
    }
}

async fn read_exact(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(), ReadError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ReadError::Closed),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests;
