//! The forwarding headers a proxy owes its upstreams, and hop-by-hop hygiene.
//!
//! Decides who the client is (the peer, or — only when the peer is a
//! trusted proxy — the address it vouches for in `X-Forwarded-For`) and
//! what `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Real-IP` and
//! `X-Request-Id` say upstream. Pure functions over header maps; used both
//! by the Pingora request path and by the tunnel, which writes its own
//! request head.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// Headers that describe one hop only and must not be forwarded
/// (RFC 9110 §7.6.1, plus the legacy ones nginx and HAProxy also drop).
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Who sent a request and what the upstream should be told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    /// The client as best known: the TCP peer, or the right-most address in
    /// `X-Forwarded-For` not belonging to a trusted proxy.
    pub client_ip: Option<IpAddr>,
    /// The `X-Forwarded-For` value to send.
    pub forwarded_for: Option<String>,
    /// `http` or `https`, as the client spoke to the edge.
    pub proto: String,
    /// The request's id: kept from a trusted proxy, else made here.
    pub request_id: String,
}

impl Forwarding {
    /// Work out the forwarding facts of a request that arrived from `peer`
    /// (`tls` when it came over TLS). Incoming `X-Forwarded-*` and
    /// `X-Request-Id` are believed only when `peer` is in `trusted`.
    pub fn resolve(
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        tls: bool,
        trusted: &[IpNet],
    ) -> Self {
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
        let peer_trusted = peer.as_ref().is_some_and(is_trusted);
        let header = |name: &str| {
            let values: Vec<&str> = headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (!values.is_empty()).then(|| values.join(", "))
        };
        let incoming_xff = peer_trusted.then(|| header("x-forwarded-for")).flatten();
        let mut client_ip = peer;
        if let Some(chain) = &incoming_xff {
            // Walk from the right: the first hop not run by us is the client.
            for hop in chain.rsplit(',').map(str::trim) {
                match hop.parse::<IpAddr>() {
                    Ok(ip) if is_trusted(&ip) => client_ip = Some(ip),
                    Ok(ip) => {
                        client_ip = Some(ip);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        let forwarded_for = match (incoming_xff, peer) {
            (Some(chain), Some(p)) => Some(format!("{chain}, {p}")),
            (None, Some(p)) => Some(p.to_string()),
            (chain, None) => chain,
        };
        let proto = peer_trusted
            .then(|| header("x-forwarded-proto"))
            .flatten()
            .filter(|p| p == "http" || p == "https")
            .unwrap_or_else(|| if tls { "https" } else { "http" }.to_owned());
        let request_id = peer_trusted
            .then(|| header("x-request-id"))
            .flatten()
            .filter(|id| id.len() <= 200)
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        Self {
            client_ip,
            forwarded_for,
            proto,
            request_id,
        }
    }

    /// The `(name, value)` pairs to set on the upstream request, replacing
    /// whatever the client sent under those names.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(4);
        if let Some(xff) = &self.forwarded_for {
            out.push(("X-Forwarded-For", xff.clone()));
        }
        if let Some(ip) = self.client_ip {
            out.push(("X-Real-IP", ip.to_string()));
        }
        out.push(("X-Forwarded-Proto", self.proto.clone()));
        out.push(("X-Request-Id", self.request_id.clone()));
        out
    }
}

/// Whether `name` must not cross this hop for a request whose `Connection`
/// header is `connection` (fields it nominates are hop-by-hop too).
pub fn is_hop_by_hop(name: &str, connection: Option<&str>) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || connection.is_some_and(|c| {
            c.split(',')
                .any(|token| token.trim().eq_ignore_ascii_case(name))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> Vec<IpNet> {
        vec!["127.0.0.0/8".parse().unwrap()]
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn untrusted_peer_cannot_spoof() {
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "abc"),
        ]);
        let f = Forwarding::resolve(&h, Some("9.9.9.9".parse().unwrap()), false, &trusted());
        assert_eq!(f.client_ip, Some("9.9.9.9".parse().unwrap()));
        assert_eq!(f.forwarded_for.as_deref(), Some("9.9.9.9"));
        assert_eq!(f.proto, "http");
        assert_ne!(f.request_id, "abc");
        assert_eq!(f.request_id.len(), 32);
    }

    #[test]
    fn trusted_peer_is_appended_and_client_found() {
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4, 127.0.0.9"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "abc"),
        ]);
        let f = Forwarding::resolve(&h, Some("127.0.0.1".parse().unwrap()), false, &trusted());
        assert_eq!(f.client_ip, Some("1.2.3.4".parse().unwrap()));
        assert_eq!(
            f.forwarded_for.as_deref(),
            Some("1.2.3.4, 127.0.0.9, 127.0.0.1")
        );
        assert_eq!(f.proto, "https");
        assert_eq!(f.request_id, "abc");
    }

    #[test]
    fn hop_by_hop_includes_nominated_fields() {
        assert!(is_hop_by_hop("Keep-Alive", None));
        assert!(is_hop_by_hop("x-secret", Some("close, X-Secret")));
        assert!(!is_hop_by_hop("x-secret", Some("close")));
        assert!(!is_hop_by_hop("sec-websocket-key", Some("Upgrade")));
    }
}
