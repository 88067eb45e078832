//! Who the client is, and what the upstream is told about it.
//!
//! One function, [`Forwarding::resolve`], decides the client's identity for
//! everything that needs it — sticky hashing on `client-ip`, per-client
//! limits, access logs, `X-Real-IP`: the connection's peer (or the source a
//! trusted PROXY header gave), or, only when that peer is in
//! `limits.trusted_proxies`, the right-most address of `X-Forwarded-For` that
//! is not itself trusted. IPv4-mapped IPv6 addresses are normalised to IPv4
//! so dual-stack listeners match IPv4 `trusted_proxies` and limits.
//!
//! It also renders the forwarding headers (`X-Forwarded-For` appended,
//! `X-Real-IP`, `X-Forwarded-Proto`, `X-Request-Id`) and says which incoming
//! fields never cross: the ones it replaces, and `Forwarded`,
//! `X-Forwarded-Host`, `X-Forwarded-Port` from an untrusted peer. Pure: no
//! sockets, no Pingora types.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use ipnet::IpNet;

use crate::h1::fields::Known;

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it is.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is one of `trusted`.
pub fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    trusted.iter().any(|n| n.contains(&ip))
}

/// A request id: 32 hex digits, a random per-process prefix and a counter
/// (cheap: no random number per request), or the id a trusted proxy sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestId {
    /// Made here.
    Made([u8; 32]),
    /// Kept from a trusted proxy.
    Kept(String),
}

impl RequestId {
    /// A fresh id.
    pub fn next() -> Self {
        static PREFIX: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = *PREFIX.get_or_init(|| {
            let mut b = [0u8; 8];
            // A failed getrandom leaves a time-based prefix: ids stay unique
            // within the process either way.
            if getrandom_fill(&mut b).is_err() {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                b = t.to_le_bytes();
            }
            u64::from_le_bytes(b)
        });
        let n = COUNTER.fetch_add(1, Relaxed);
        let mut out = [0u8; 32];
        hex_into(&mut out[..16], prefix);
        hex_into(&mut out[16..], n);
        RequestId::Made(out)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        match self {
            RequestId::Made(b) => std::str::from_utf8(b).unwrap_or_default(),
            RequestId::Kept(s) => s,
        }
    }
}

fn hex_into(out: &mut [u8], mut v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
}

fn getrandom_fill(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// Who sent a request and what the upstream should be told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    /// The connection's peer (or the source of a trusted PROXY header).
    pub peer: IpAddr,
    /// Whether `peer` is a trusted proxy, so its forwarding headers count.
    pub peer_trusted: bool,
    /// The client as best known (see the module doc): the identity used by
    /// hashing, limits and logs.
    pub client_ip: IpAddr,
    /// Whether the client spoke HTTPS to the edge.
    pub https: bool,
    /// The request's id.
    pub request_id: RequestId,
}

impl Forwarding {
    /// Work out the forwarding facts of a request from `peer` (`tls` when
    /// it came over TLS here). `xff` are the incoming `X-Forwarded-For`
    /// values in order; `proto` and `request_id` the incoming
    /// `X-Forwarded-Proto` and `X-Request-Id`. Incoming values are believed
    /// only from a trusted peer.
    pub fn resolve<'a>(
        peer: IpAddr,
        tls: bool,
        trusted: &[IpNet],
        xff: impl DoubleEndedIterator<Item = &'a [u8]>,
        proto: Option<&[u8]>,
        request_id: Option<&[u8]>,
    ) -> Self {
        let peer = normalize(peer);
        let peer_trusted = is_trusted(trusted, peer);
        let mut client_ip = peer;
        if peer_trusted {
            // Walk from the right: the first hop not run by a trusted proxy
            // is the client.
            'walk: for value in xff.rev() {
                for hop in value.rsplit(|&b| b == b',') {
                    let Some(ip) = parse_ip(hop) else {
                        break 'walk;
                    };
                    client_ip = ip;
                    if !is_trusted(trusted, ip) {
                        break 'walk;
                    }
                }
            }
        }
        let https = match proto.filter(|_| peer_trusted).map(trim) {
            Some(p) if p.eq_ignore_ascii_case(b"https") => true,
            Some(p) if p.eq_ignore_ascii_case(b"http") => false,
            _ => tls,
        };
        let request_id = request_id
            .filter(|_| peer_trusted)
            .map(trim)
            .filter(|id| {
                !id.is_empty() && id.len() <= 200 && id.iter().all(|b| b.is_ascii_graphic())
            })
            .and_then(|id| std::str::from_utf8(id).ok())
            .map_or_else(RequestId::next, |id| RequestId::Kept(id.to_owned()));
        Self {
            peer,
            peer_trusted,
            client_ip,
            https,
            request_id,
        }
    }

    /// Whether an incoming field of kind `known` is dropped on the way
    /// upstream: the ones rendered here, and unverifiable ones from an
    /// untrusted peer.
    pub fn drops(&self, known: Known) -> bool {
        match known {
            Known::XForwardedFor | Known::XRealIp | Known::XForwardedProto | Known::XRequestId => {
                true
            }
            Known::Forwarded | Known::XForwardedHost | Known::XForwardedPort => !self.peer_trusted,
            _ => false,
        }
    }

    /// Append the forwarding header lines (`Name: value\r\n`) to an HTTP/1
    /// head. `xff` are the incoming `X-Forwarded-For` values, kept in front
    /// of the peer only when the peer is trusted.
    pub fn write_h1<'a>(&self, out: &mut Vec<u8>, xff: impl Iterator<Item = &'a [u8]>) {
        out.extend_from_slice(b"X-Forwarded-For: ");
        if self.peer_trusted {
            for value in xff {
                out.extend_from_slice(value);
                out.extend_from_slice(b", ");
            }
        }
        push_ip(out, self.peer);
        out.extend_from_slice(b"\r\nX-Real-IP: ");
        push_ip(out, self.client_ip);
        out.extend_from_slice(if self.https {
            b"\r\nX-Forwarded-Proto: https\r\nX-Request-Id: "
        } else {
            b"\r\nX-Forwarded-Proto: http\r\nX-Request-Id: "
        });
        out.extend_from_slice(self.request_id.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// The same headers as `(name, value)` pairs, for the HTTP/2 path.
    pub fn pairs<'a>(&self, xff: impl Iterator<Item = &'a [u8]>) -> [(&'static str, String); 4] {
        let mut chain = String::new();
        if self.peer_trusted {
            for value in xff {
                chain.push_str(&String::from_utf8_lossy(value));
                chain.push_str(", ");
            }
        }
        let _ = write!(chain, "{}", self.peer);
        [
            ("X-Forwarded-For", chain),
            ("X-Real-IP", self.client_ip.to_string()),
            (
                "X-Forwarded-Proto",
                if self.https { "https" } else { "http" }.to_owned(),
            ),
            ("X-Request-Id", self.request_id.as_str().to_owned()),
        ]
    }
}

fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    let mut s = String::with_capacity(40);
    let _ = write!(s, "{ip}");
    out.extend_from_slice(s.as_bytes());
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

fn parse_ip(hop: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(trim(hop)).ok()?;
    // Tolerate "[v6]" and "v4:port" forms some proxies write.
    let text = text.trim_start_matches('[');
    let ip = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.split(']').next()?.parse().ok())
        .or_else(|| text.rsplit_once(':')?.0.parse().ok())?;
    Some(normalize(ip))
}

/// Header names a `Connection` field may not nominate: dropping them on the
/// way upstream would change who the request is for or what it carries
/// (Host, the body, credentials, the forwarding facts, the WebSocket
/// handshake). A request that tries is refused with 400.
pub fn is_critical_end_to_end(token: &[u8]) -> bool {
    const CRITICAL: [&str; 16] = [
        "host",
        "content-length",
        "authorization",
        "cookie",
        "origin",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-real-ip",
        "x-request-id",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    ];
    CRITICAL
        .iter()
        .any(|c| token.eq_ignore_ascii_case(c.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> Vec<IpNet> {
        vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ]
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn render(f: &Forwarding, xff: &[&[u8]]) -> String {
        let mut out = Vec::new();
        f.write_h1(&mut out, xff.iter().copied());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn an_untrusted_peer_cannot_spoof() {
        let xff: &[&[u8]] = &[b"1.2.3.4"];
        let f = Forwarding::resolve(
            ip("9.9.9.9"),
            false,
            &trusted(),
            xff.iter().copied(),
            Some(b"https"),
            Some(b"abc"),
        );
        assert_eq!(f.client_ip, ip("9.9.9.9"));
        assert!(!f.https);
        assert_ne!(f.request_id.as_str(), "abc");
        assert_eq!(f.request_id.as_str().len(), 32);
        let text = render(&f, xff);
        assert!(
            text.starts_with(
                "X-Forwarded-For: 9.9.9.9\r\nX-Real-IP: 9.9.9.9\r\nX-Forwarded-Proto: http\r\n"
            ),
            "{text}"
        );
        assert!(f.drops(Known::Forwarded) && f.drops(Known::XForwardedHost));
    }

    #[test]
    fn a_trusted_peer_is_appended_and_the_client_found() {
        let xff: &[&[u8]] = &[b"1.2.3.4, 10.0.0.9", b"127.0.0.9"];
        let f = Forwarding::resolve(
            ip("127.0.0.1"),
            false,
            &trusted(),
            xff.iter().copied(),
            Some(b"https"),
            Some(b"abc"),
        );
        assert_eq!(f.client_ip, ip("1.2.3.4"));
        assert!(f.https);
        assert_eq!(f.request_id.as_str(), "abc");
        let text = render(&f, xff);
        assert!(text.starts_with("X-Forwarded-For: 1.2.3.4, 10.0.0.9, 127.0.0.9, 127.0.0.1\r\nX-Real-IP: 1.2.3.4\r\n"), "{text}");
        assert!(!f.drops(Known::Forwarded));
    }

    #[test]
    fn garbage_stops_the_walk_and_mapped_addresses_are_ipv4() {
        let xff: &[&[u8]] = &[b"5.6.7.8, garbage, 10.1.1.1"];
        let f = Forwarding::resolve(
            ip("::ffff:127.0.0.1"),
            true,
            &trusted(),
            xff.iter().copied(),
            None,
            None,
        );
        assert_eq!(f.peer, ip("127.0.0.1"));
        assert!(f.peer_trusted);
        assert_eq!(f.client_ip, ip("10.1.1.1"));
        assert!(f.https);
        assert_eq!(normalize(ip("::ffff:1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(normalize(ip("::1")), ip("::1"));
    }

    #[test]
    fn request_ids_are_distinct() {
        let a = RequestId::next();
        let b = RequestId::next();
        assert_ne!(a, b);
        assert_eq!(a.as_str()[..16], b.as_str()[..16]);
    }

    #[test]
    fn critical_nominations() {
        assert!(is_critical_end_to_end(b"Host"));
        assert!(is_critical_end_to_end(b"x-forwarded-for"));
        assert!(!is_critical_end_to_end(b"x-custom"));
    }
}
