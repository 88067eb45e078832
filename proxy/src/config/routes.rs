//! Validation of `[[route]]`: host patterns, path prefixes, the upstream
//! each route names, and its per-route limits.
//!
//! It checks that a route's upstream exists by name only; whether that
//! upstream is itself valid is reported at the upstream's own path.

use super::limits::validate_route_limits;
use super::problems::Problems;
use super::raw::RawRoute;
use super::{HostMatch, Route, RouteLimits};

/// Every `[[route]]`, in order; at least one is required, and each must
/// name one of `upstreams` (the names of every `[upstream.NAME]`, valid or not).
pub(super) fn validate_routes(
    p: &mut Problems,
    raw: Vec<(String, RawRoute)>,
    upstreams: &[String],
) -> Vec<Route> {
    if raw.is_empty() && !p.any_under("route") {
        p.add("route", "no [[route]]: every request would get 404");
    }
    let mut out = Vec::new();
    for (path, r) in raw {
        if !upstreams.contains(&r.upstream) {
            p.add(
                format!("{path}.upstream"),
                format!("no upstream named {:?}", r.upstream),
            );
        }
        let path_prefix = r.path_prefix.unwrap_or_else(|| "/".to_owned());
        if !path_prefix.starts_with('/') {
            p.add(
                format!("{path}.path_prefix"),
                format!("{path_prefix:?} must start with '/'"),
            );
        }
        let host = host_match(p, &path, r.host.as_deref());
        let limits = r
            .limits
            .map(|l| validate_route_limits(p, &path, l))
            .unwrap_or_else(RouteLimits::default);
        out.push(Route {
            host,
            path_prefix,
            upstream: r.upstream,
            limits,
        });
    }
    out
}

/// `host = "*" | "name" | "*.suffix"`, lowercased.
fn host_match(p: &mut Problems, at: &str, host: Option<&str>) -> HostMatch {
    match host.map(str::to_ascii_lowercase) {
        None => HostMatch::Any,
        Some(h) if h == "*" => HostMatch::Any,
        Some(h) if h.starts_with("*.") && h.len() > 2 && !h[2..].contains('*') => {
            HostMatch::Suffix(h[1..].to_owned())
        }
        Some(h) if !h.is_empty() && !h.contains('*') && !h.contains(' ') => HostMatch::Exact(h),
        Some(h) => {
            p.add(
                format!("{at}.host"),
                format!("{h:?} is not \"*\", a host name or \"*.suffix\""),
            );
            HostMatch::Any
        }
    }
}
