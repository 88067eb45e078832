//! PROXY protocol v1/v2 headers (placeholder until the parser lands; a
//! listener with `proxy_protocol = true` is refused at start meanwhile).

use std::net::SocketAddr;

/// A parsed header and the bytes read past it.
pub struct Header {
    /// The client's address, when the header carries one.
    pub source: Option<SocketAddr>,
    /// Bytes that followed the header.
    pub rest: Vec<u8>,
}

/// Read a PROXY header from `tcp` by `deadline`.
pub async fn read_header(
    _tcp: &mut tokio::net::TcpStream,
    _deadline: std::time::Instant,
) -> Result<Header, std::io::Error> {
    Err(std::io::Error::other(
        "PROXY protocol is not implemented yet",
    ))
}
