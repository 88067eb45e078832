//! One accepted client connection, before HTTP: the per-address cap, the
//! PROXY protocol header (from trusted peers only), the TLS handshake with
//! its deadline, then the protocol the client chose — HTTP/2 over ALPN, or
//! HTTP/1.1.
//!
//! The process-wide cap was already taken by the accept loop, which closes a
//! connection over `max_connections` before this runs.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::admission::ConnSlot;
use crate::forwarding::{is_trusted, normalize};
use crate::h1::io::ReadBuf;
use crate::process::Process;
use crate::stats::OpenConnection;
use crate::stream::ClientStream;

/// What holds a client connection's places under the caps and in the
/// listener's gauge, for as long as the connection lives — including as a
/// tunnel, which outlives the task that accepted it.
#[derive(Debug)]
pub struct ConnGuards {
    _process: ConnSlot,
    _per_ip: Option<ConnSlot>,
    _open: OpenConnection,
}

/// What is known about a client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Index of the `[[listener]]` it came in on.
    pub listener: usize,
    /// The TCP peer (IPv4-mapped addresses normalised).
    pub peer: SocketAddr,
    /// The client: the trusted PROXY header's source, else the peer.
    pub client: SocketAddr,
    /// TLS was terminated on it.
    pub tls: bool,
    /// When it was accepted.
    pub accepted: Instant,
}

fn normalized(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(normalize(addr.ip()), addr.port())
}

/// Serve one accepted connection to the end. `slot` holds its place under
/// the process cap.
pub async fn serve(
    process: Arc<Process>,
    listener: usize,
    tcp: TcpStream,
    peer: SocketAddr,
    slot: ConnSlot,
) {
    let accepted = Instant::now();
    let lstats = process.stats.listener(listener).clone();
    let open = OpenConnection::new(lstats.clone());
    let _ = tcp.set_nodelay(true);
    let rt = process.runtime.load_full();
    let limits = &rt.limits.settings;
    let lrt = rt.listener(listener);
    let peer = normalized(peer);
    let mut tcp = tcp;

    let mut client = peer;
    if lrt.settings.proxy_protocol {
        if !is_trusted(&limits.trusted_proxies, peer.ip()) {
            lstats.refused_proxy_protocol.fetch_add(1, Relaxed);
            tracing::debug!(%peer, "PROXY header expected from an untrusted peer; closing");
            return;
        }
        // The header is read exactly (the client's own bytes stay in the
        // socket), within what is left of the head deadline.
        let left = (accepted + limits.header_timeout).saturating_duration_since(Instant::now());
        match crate::proxy_protocol::read_header(&mut tcp, left).await {
            Ok(header) => {
                if let Some(source) = header.source {
                    client = normalized(source);
                }
            }
            Err(e) => {
                lstats.refused_proxy_protocol.fetch_add(1, Relaxed);
                tracing::debug!(%peer, error = %e, "bad PROXY header; closing");
                return;
            }
        }
    }
    let per_ip: Option<ConnSlot> = match process.admission.per_ip(&rt, client.ip()) {
        Ok(slot) => slot,
        Err(at) => {
            tracing::debug!(client = %client, %at, "over max_connections_per_ip; closing");
            lstats.refused_per_ip.fetch_add(1, Relaxed);
            return;
        }
    };

    let (stream, h2) = match &lrt.tls {
        None => (ClientStream::Plain(tcp), false),
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
            match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    lstats.tls_handshakes.fetch_add(1, Relaxed);
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    (ClientStream::Tls(Box::new(stream)), h2)
                }
                Ok(Err(e)) => {
                    lstats.tls_failures.fetch_add(1, Relaxed);
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    lstats.tls_failures.fetch_add(1, Relaxed);
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let info = ConnInfo {
        listener,
        peer,
        client,
        tls: stream.is_tls(),
        accepted,
    };
    drop(rt);
    let guards = ConnGuards {
        _process: slot,
        _per_ip: per_ip,
        _open: open,
    };
    if h2 {
        crate::h2::serve(process, info, stream).await;
        drop(guards);
    } else {
        crate::h1::serve(process, info, stream, ReadBuf::default(), guards).await;
    }
}
