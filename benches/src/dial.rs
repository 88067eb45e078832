//! How `ringway-load` reaches the thing it measures: a loopback URL, the
//! sticky key every request carries, and TCP connections from rotating
//! source addresses.
//!
//! - [`Target`]: an `http://` or `ws://` URL whose host is a literal
//!   127.0.0.0/8 address. Anything else is refused, so the load generator
//!   can never be pointed off the machine.
//! - [`sticky`]: connection `i` carries key `<prefix><i>` both as `?sid=`
//!   and as `X-Session-Id`, so nginx, HAProxy, Caddy and ringway-proxy can
//!   each hash on the form they support and all see the same key.
//! - [`connect`]: with source addresses given, connection `i` binds to
//!   `sources[i % len]` before connecting. `IP_BIND_ADDRESS_NO_PORT` defers
//!   the port choice to `connect`, so a source port is only unique per
//!   4-tuple and thousands of connections (plus the TIME_WAIT left by
//!   earlier runs) fit in the ephemeral range.
//! - [`ws_handshake`]: the WebSocket upgrade over such a connection, with
//!   small buffers (an idle client should not cost 256 KiB).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// A WebSocket as `ringway-load` holds it: plain TCP, no TLS layer.
pub type Ws = WebSocketStream<TcpStream>;

/// Where the load goes: a loopback address and a request target.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http` or `ws`.
    pub scheme: String,
    /// The address connected to.
    pub addr: SocketAddr,
    /// Path and query as written in the URL (`/` if none).
    pub path: String,
}

impl Target {
    /// Parse `http://127.0.0.1:PORT/path?query` (or `ws://`). The host
    /// must be a literal IPv4 loopback address.
    pub fn parse(url: &str, scheme: &str) -> anyhow::Result<Target> {
        let rest = url
            .strip_prefix(&format!("{scheme}://"))
            .with_context(|| format!("{url}: expected a {scheme}:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = authority
            .parse()
            .with_context(|| format!("{url}: the host must be a literal IP:PORT"))?;
        if !is_loopback_v4(addr.ip()) {
            bail!("{url}: only 127.0.0.0/8 targets are allowed");
        }
        Ok(Target {
            scheme: scheme.to_owned(),
            addr,
            path: path.to_owned(),
        })
    }

    /// The request target for sticky key `key`: the path with `sid=key`
    /// added to its query.
    pub fn path_with_key(&self, key: &str) -> String {
        let sep = if self.path.contains('?') { '&' } else { '?' };
        format!("{}{sep}sid={key}", self.path)
    }

    /// The full URL for sticky key `key`.
    pub fn url_with_key(&self, key: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, self.path_with_key(key))
    }
}

/// Is `ip` in 127.0.0.0/8?
pub fn is_loopback_v4(ip: IpAddr) -> bool {
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
            if !is_loopback_v4(ip) {
                bail!("source {ip} is not in 127.0.0.0/8");
            }
            Ok(ip)
        })
        .collect()
}

/// The sticky key of connection `i`.
pub fn sticky(prefix: &str, i: usize) -> String {
    format!("{prefix}{i}")
}

/// The source address of connection `i`: `None` lets the kernel choose.
pub fn source_for(sources: &[IpAddr], i: usize) -> Option<IpAddr> {
    (!sources.is_empty()).then(|| sources[i % sources.len()])
}

/// Open a TCP connection to `dst` (from `src` if given) with
/// `TCP_NODELAY`, within `within`.
pub async fn connect(
    dst: SocketAddr,
    src: Option<IpAddr>,
    within: Duration,
) -> anyhow::Result<TcpStream> {
    let dial = async {
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
        Ok::<_, std::io::Error>(stream)
    };
    match tokio::time::timeout(within, dial).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context("connect")),
        Err(_) => bail!("connect timed out"),
    }
}

/// Client WebSocket settings: 8 KiB read buffer, frames written at once.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
}

/// Upgrade `stream` to a WebSocket at `target` with sticky key `key`
/// (`?sid=` and `X-Session-Id`), within `within`.
pub async fn ws_handshake(
    stream: TcpStream,
    target: &Target,
    key: &str,
    within: Duration,
) -> anyhow::Result<Ws> {
    let mut req = target
        .url_with_key(key)
        .into_client_request()
        .context("build the upgrade request")?;
    req.headers_mut()
        .insert("x-session-id", key.parse().context("sticky key header")?);
    let upgrade = tokio_tungstenite::client_async_with_config(req, stream, Some(ws_config()));
    match tokio::time::timeout(within, upgrade).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            bail!("upgrade refused with {}", resp.status().as_u16())
        }
        Ok(Err(e)) => Err(anyhow::Error::new(e).context("upgrade")),
        Err(_) => bail!("upgrade timed out"),
    }
}

/// Connect and upgrade: [`connect`] then [`ws_handshake`].
pub async fn ws_open(
    target: &Target,
    src: Option<IpAddr>,
    key: &str,
    within: Duration,
) -> anyhow::Result<Ws> {
    let stream = connect(target.addr, src, within).await?;
    ws_handshake(stream, target, key, within).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_loopback_only() {
        let t = Target::parse("ws://127.0.0.1:8080/ws", "ws").unwrap();
        assert_eq!(t.path_with_key("s3"), "/ws?sid=s3");
        assert_eq!(t.url_with_key("s3"), "ws://127.0.0.1:8080/ws?sid=s3");
        let t = Target::parse("http://127.0.0.2:81", "http").unwrap();
        assert_eq!(t.path_with_key("a"), "/?sid=a");
        let t = Target::parse("http://127.0.0.1:81/x?y=1", "http").unwrap();
        assert_eq!(t.path_with_key("a"), "/x?y=1&sid=a");
        assert!(Target::parse("http://10.0.0.1:80/", "http").is_err());
        assert!(Target::parse("http://localhost:80/", "http").is_err());
        assert!(Target::parse("ws://127.0.0.1:80/", "http").is_err());
        assert!(parse_sources("127.0.0.2,127.0.0.3").unwrap().len() == 2);
        assert!(parse_sources("192.168.1.1").is_err());
        assert_eq!(source_for(&[], 3), None);
    }
}
