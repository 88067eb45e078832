//! Validation of `[limits]` and of the per-route `limits = { … }` overrides:
//! trusted proxies, token-bucket rates, per-address caps, client timeouts
//! and size limits.
//!
//! Owns the bounds of every limit (so a limiter never sees a zero rate or a
//! bucket smaller than one second of traffic); enforcing them is the
//! limits module's job, not this one's.

use std::time::Duration;

use ipnet::IpNet;

use super::problems::{Problems, Span};
use super::raw::{RawLimits, RawRouteLimits};
use super::{Limits, RateLimit, RouteLimits};

/// Highest rate (per second) any bucket accepts.
const MAX_RATE: i64 = 1_000_000;
/// Deepest bucket: ten seconds at the highest rate.
const MAX_BURST: i64 = 10 * MAX_RATE;
/// Highest per-address cap on connections or WebSockets.
const MAX_PER_IP: i64 = 1_000_000;
/// Largest `max_body_bytes`: 1 TiB.
const MAX_BODY_BYTES: i64 = 1 << 40;

/// One token bucket as written: the rate key and value, the burst key and value.
struct RawRate<'a> {
    rate: (&'a str, Option<i64>),
    burst: (&'a str, Option<i64>),
    /// Burst when not written, as a multiple of the rate.
    default_factor: u32,
}

/// A rate and its bucket depth under `at`; `None` when no rate is written
/// (or it is invalid, which is recorded).
fn rate_limit(p: &mut Problems, at: &str, raw: RawRate<'_>) -> Option<RateLimit> {
    let (rate_key, rate) = raw.rate;
    let (burst_key, burst) = raw.burst;
    let rate_at = format!("{at}.{rate_key}");
    let burst_at = format!("{at}.{burst_key}");
    let per_second: Option<u32> =
        p.count_opt_why(&rate_at, rate, 1..=MAX_RATE, "leave it out for no limit");
    let depth: Option<u32> = p.count_opt(&burst_at, burst, 1..=MAX_BURST);
    if rate.is_none() && burst.is_some() {
        p.add(&burst_at, format!("needs {rate_key}"));
    }
    let per_second = per_second?;
    let burst = match depth {
        Some(b) if b < per_second => {
            p.add(
                burst_at,
                format!("{burst_key} {b} is below {rate_key} {per_second}: the bucket could never hold one second of traffic"),
            );
            return None;
        }
        Some(b) => b,
        None => per_second.saturating_mul(raw.default_factor),
    };
    Some(RateLimit { per_second, burst })
}

/// The request rate and WebSocket upgrade rate under `at` (`limits` or `route[i].limits`).
fn rates(
    p: &mut Problems,
    at: &str,
    requests: (Option<i64>, Option<i64>),
    upgrades: (Option<i64>, Option<i64>),
) -> (Option<RateLimit>, Option<RateLimit>) {
    let requests = rate_limit(
        p,
        at,
        RawRate {
            rate: ("requests_per_second", requests.0),
            burst: ("burst", requests.1),
            default_factor: 2,
        },
    );
    let upgrades = rate_limit(
        p,
        at,
        RawRate {
            rate: ("websocket_upgrades_per_second", upgrades.0),
            burst: ("websocket_upgrades_burst", upgrades.1),
            default_factor: 1,
        },
    );
    (requests, upgrades)
}

fn max_body_bytes(p: &mut Problems, at: &str, value: Option<i64>) -> Option<u64> {
    p.count_opt_why(
        &format!("{at}.max_body_bytes"),
        value,
        0..=MAX_BODY_BYTES,
        "1 TiB",
    )
}

/// `limits = { … }` on the route at `at` (`route[i]`).
pub(super) fn validate_route_limits(
    p: &mut Problems,
    at: &str,
    raw: RawRouteLimits,
) -> RouteLimits {
    let at = format!("{at}.limits");
    let (requests, websocket_upgrades) = rates(
        p,
        &at,
        (raw.requests_per_second, raw.burst),
        (
            raw.websocket_upgrades_per_second,
            raw.websocket_upgrades_burst,
        ),
    );
    RouteLimits {
        requests,
        websocket_upgrades,
        max_body_bytes: max_body_bytes(p, &at, raw.max_body_bytes),
    }
}

/// `[limits]`: every key checked against its bound; absent keys take the
/// defaults of [`Limits::default`].
pub(super) fn validate_limits(p: &mut Problems, raw: RawLimits) -> Limits {
    let defaults = Limits::default();
    let trusted_proxies = raw
        .trusted_proxies
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, net)| {
            let parsed = net
                .parse::<IpNet>()
                .or_else(|_| net.parse::<std::net::IpAddr>().map(IpNet::from));
            if parsed.is_err() {
                p.add(
                    format!("limits.trusted_proxies[{i}]"),
                    format!("{net:?} is not an IP address or CIDR such as \"10.0.0.0/8\""),
                );
            }
            parsed.ok()
        })
        .collect();
    let (requests, websocket_upgrades) = rates(
        p,
        "limits",
        (raw.requests_per_second, raw.burst),
        (
            raw.websocket_upgrades_per_second,
            raw.websocket_upgrades_burst,
        ),
    );
    let per_ip = "leave it out for no limit";
    let max_connections_per_ip = p.count_opt_why(
        "limits.max_connections_per_ip",
        raw.max_connections_per_ip,
        1..=MAX_PER_IP,
        per_ip,
    );
    let max_websockets_per_ip = p.count_opt_why(
        "limits.max_websockets_per_ip",
        raw.max_websockets_per_ip,
        1..=MAX_PER_IP,
        per_ip,
    );
    let mut timeout = |key: &str, text: Option<String>, default: Duration| {
        p.duration(
            &format!("limits.{key}"),
            text.as_deref(),
            Span::Positive,
            default,
        )
    };
    let header_timeout = timeout(
        "header_timeout",
        raw.header_timeout,
        defaults.header_timeout,
    );
    let tls_handshake_timeout = timeout(
        "tls_handshake_timeout",
        raw.tls_handshake_timeout,
        defaults.tls_handshake_timeout,
    );
    let keepalive_timeout = timeout(
        "keepalive_timeout",
        raw.keepalive_timeout,
        defaults.keepalive_timeout,
    );
    let client_write_timeout = timeout(
        "client_write_timeout",
        raw.client_write_timeout,
        defaults.client_write_timeout,
    );
    let body_timeout = timeout("body_timeout", raw.body_timeout, defaults.body_timeout);
    let max_request_line_bytes = p.count(
        "limits.max_request_line_bytes",
        raw.max_request_line_bytes,
        256..=65536,
        defaults.max_request_line_bytes,
    );
    let max_header_bytes = p.count(
        "limits.max_header_bytes",
        raw.max_header_bytes,
        1024..=1_048_576,
        defaults.max_header_bytes,
    );
    if max_header_bytes < max_request_line_bytes {
        p.add(
            "limits.max_header_bytes",
            format!("{max_header_bytes} is below max_request_line_bytes {max_request_line_bytes}: the request head includes its request line"),
        );
    }
    Limits {
        trusted_proxies,
        requests,
        websocket_upgrades,
        max_connections_per_ip,
        max_websockets_per_ip,
        header_timeout,
        tls_handshake_timeout,
        keepalive_timeout,
        client_write_timeout,
        body_timeout,
        max_request_line_bytes,
        max_header_bytes,
        max_body_bytes: max_body_bytes(p, "limits", raw.max_body_bytes)
            .unwrap_or(defaults.max_body_bytes),
        h2_max_concurrent_streams: p.count(
            "limits.h2_max_concurrent_streams",
            raw.h2_max_concurrent_streams,
            1..=1000,
            defaults.h2_max_concurrent_streams,
        ),
    }
}
