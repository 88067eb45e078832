//! The load generator: how it reaches the thing it measures, and the loads
//! themselves ([`http`] keep-alive GETs, [`ws`] WebSocket echo and idle
//! hold with a raw client, [`tls`] handshake rates). Every connection `i`
//! carries the sticky key `s<i>` both as `?sid=` and as `X-Session-Id`, so
//! every peer hashes the same key whichever form it supports.
//!
//! This module owns the connection: a [`Target`] whose host is a literal
//! 127.0.0.0/8 address (anything else is refused, so the load can never be
//! pointed off the machine), and a [`Dialer`] that connects from rotating
//! loopback source addresses (`IP_BIND_ADDRESS_NO_PORT` defers the port
//! choice to `connect`, so thousands of connections and the TIME_WAIT of
//! earlier runs fit in the ephemeral range) with `TCP_NODELAY`, over TLS
//! when the URL says `https://` or `wss://`. It never starts a process.

pub mod http;
pub mod tls;
pub mod ws;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

/// Where the load goes: a loopback address, TLS or not, and a path.
#[derive(Debug, Clone)]
pub struct Target {
    /// `https://` or `wss://`.
    pub tls: bool,
    /// The address connected to.
    pub addr: SocketAddr,
    /// Path and query as written in the URL (`/` if none).
    pub path: String,
}

impl Target {
    /// Parse `http[s]://127.0.0.1:PORT/path?query` or `ws[s]://…`; the host
    /// must be a literal IPv4 loopback address.
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let (scheme, rest) = url
            .split_once("://")
            .with_context(|| format!("{url}: not a URL"))?;
        let tls = match scheme {
            "http" | "ws" => false,
            "https" | "wss" => true,
            _ => bail!("{url}: expected http://, https://, ws:// or wss://"),
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let addr: SocketAddr = authority
            .parse()
            .with_context(|| format!("{url}: the host must be a literal IP:PORT"))?;
        if !is_loopback_v4(addr.ip()) {
            bail!("{url}: only 127.0.0.0/8 targets are allowed");
        }
        let path = if path.is_empty() { "/" } else { path };
        Ok(Target {
            tls,
            addr,
            path: path.to_owned(),
        })
    }

    /// The request target for connection `i`: the path with its sticky key
    /// added to the query.
    pub fn path_for(&self, i: usize) -> String {
        let sep = if self.path.contains('?') { '&' } else { '?' };
        format!("{}{sep}sid={}", self.path, key(i))
    }
}

/// The sticky key of connection `i`.
pub fn key(i: usize) -> String {
    format!("s{i}")
}

fn is_loopback_v4(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 127)
}

/// Parse a comma-separated list of loopback source addresses.
pub fn parse_sources(list: &str) -> anyhow::Result<Vec<IpAddr>> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let ip: IpAddr = s
                .trim()
                .parse()
                .with_context(|| format!("bad address {s:?}"))?;
            anyhow::ensure!(is_loopback_v4(ip), "source {ip} is not in 127.0.0.0/8");
            Ok(ip)
        })
        .collect()
}

/// How connections are opened: from which sources, within what time, and
/// with which TLS client (required for `https://` and `wss://` targets).
#[derive(Clone)]
pub struct Dialer {
    /// Source addresses connection `i` rotates over (empty: the kernel's choice).
    pub sources: Vec<IpAddr>,
    /// Limit of a connect (and of a TLS handshake).
    pub timeout: Duration,
    /// The TLS client.
    pub tls: Option<TlsConnector>,
}

impl Dialer {
    /// Connection `i` to `target`: TCP from its source, then TLS if asked.
    pub async fn open(&self, target: &Target, i: usize) -> anyhow::Result<Conn> {
        let src = (!self.sources.is_empty()).then(|| self.sources[i % self.sources.len()]);
        let tcp = tokio::time::timeout(self.timeout, connect(target.addr, src))
            .await
            .map_err(|_| anyhow::anyhow!("connect timed out"))?
            .context("connect")?;
        if !target.tls {
            let io = Box::new(tcp);
            return Ok(Conn { io, resumed: false });
        }
        let connector = self
            .tls
            .as_ref()
            .context("a TLS target needs a TLS client (--ca)")?;
        let name = rustls::pki_types::ServerName::IpAddress(target.addr.ip().into());
        let tls = tokio::time::timeout(self.timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| anyhow::anyhow!("TLS handshake timed out"))?
            .context("TLS handshake")?;
        let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let io = Box::new(tls);
        Ok(Conn { io, resumed })
    }
}

async fn connect(dst: SocketAddr, src: Option<IpAddr>) -> io::Result<TcpStream> {
    let stream = match src {
        None => TcpStream::connect(dst).await?,
        Some(ip) => {
            let socket = TcpSocket::new_v4()?;
            let one: libc::c_int = 1;
            // SAFETY: setsockopt on a socket this function owns, with a
            // pointer to a live c_int and its size.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(dst).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What a connection is read and written through: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open client connection.
pub struct Conn {
    /// The byte stream.
    pub io: Box<dyn Io>,
    /// Whether its TLS session was resumed (false for plain TCP).
    pub resumed: bool,
}

/// Keeps the first few distinct error messages of a run.
#[derive(Debug, Default)]
pub struct Samples(pub Vec<String>);

impl Samples {
    /// Remember `e` if it is new and there is room.
    pub fn add(&mut self, e: impl std::fmt::Display) {
        let e = e.to_string();
        if self.0.len() < 5 && !self.0.contains(&e) {
            self.0.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_loopback_only() {
        let t = Target::parse("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!((t.tls, t.path_for(3).as_str()), (false, "/ws?sid=s3"));
        let t = Target::parse("https://127.0.0.2:81").unwrap();
        assert_eq!((t.tls, t.path_for(0).as_str()), (true, "/?sid=s0"));
        let t = Target::parse("http://127.0.0.1:81/x?y=1").unwrap();
        assert_eq!(t.path_for(1), "/x?y=1&sid=s1");
        assert!(Target::parse("http://10.0.0.1:80/").is_err());
        assert!(Target::parse("http://localhost:80/").is_err());
        assert!(Target::parse("ftp://127.0.0.1:80/").is_err());
        assert_eq!(parse_sources("127.0.0.2, 127.0.0.3").unwrap().len(), 2);
        assert!(parse_sources("192.168.1.1").is_err());
    }
}
