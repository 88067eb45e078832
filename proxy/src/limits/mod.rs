//! Per-client limits in fixed memory: request and WebSocket-upgrade rates
//! (token buckets) and concurrent connections and WebSockets per address
//! (caps), plus the response fields that announce a rate limit.
//!
//! Owns the decisions "may this client do this now" and nothing around
//! them: no clock reads inside a decision (callers pass `now`, see
//! [`clock`]), no I/O, no Pingora. State lives in count-min sketches of
//! fixed size ([`sketch`]), so a flood of distinct addresses cannot grow
//! memory; each limiter states its memory and error bounds in its module
//! documentation. Collisions only ever make a limit stricter, never looser.
//!
//! Which limiter answers what:
//! - [`RateLimiter`]: `requests_per_second`/`burst` per client identity,
//!   and, as a second instance, `websocket_upgrades_per_second`.
//! - [`ConcurrencyLimiter`]: `max_connections_per_ip` and
//!   `max_websockets_per_ip` per peer (or PROXY-header) address, one
//!   instance each; the guard it hands out releases the slot on drop.
//! - [`RateLimitFields`]: `RateLimit-Policy`, `RateLimit` and
//!   `Retry-After` for a [`Decision`].
//!
//! Keys are whatever the caller hashes; for addresses use [`client_key`].

use std::net::{IpAddr, Ipv6Addr};

pub mod clock;
pub mod concurrency;
pub mod headers;
pub mod rate;
pub mod sketch;

pub use concurrency::{AtCap, ConcurrencyGuard, ConcurrencyLimiter};
pub use headers::{RateLimitFields, RenderedFields};
pub use rate::{Decision, RateLimiter};
pub use sketch::SketchShape;

/// The key a client address is limited under: IPv4-mapped IPv6 addresses
/// become the IPv4 address they carry (a dual-stack listener sees IPv4
/// clients as `::ffff:a.b.c.d`), and an IPv6 address stands for its /64 —
/// the smallest prefix a site is given, so rotating addresses inside it
/// does not buy a new bucket.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_keys_normalise_mapped_addresses_and_group_a_v6_site() {
        let key = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:bbbb::9"), key("2001:db8:1:2::"));
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
    }
}
