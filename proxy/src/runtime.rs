//! The running configuration: everything a request needs, built from one
//! validated [`Config`] and swapped as one value — routes with their pools
//! resolved, pools with their servers and rings, each listener's TLS, the
//! limits and their limiter state, the log settings.
//!
//! Architecture invariant: a request (and a connection, between requests)
//! loads the runtime once and uses that snapshot to its end, so a reload —
//! an atomic pointer swap — never changes the rules under a running request.
//! Building never touches the network; it reads certificate files.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::{
    Config, ConfigError, ConfigErrors, Limits, Listener, LogSettings, RateLimit, Route,
};
use crate::limits::{RateLimitFields, RateLimiter, SketchShape};
use crate::tls::{ServerTls, SessionState, UpstreamTlsConfig};
use crate::upstream::{Pool, ServerState};

/// A rate limit as it runs: the limiter (its buckets) and the fields that
/// announce it in a 429.
#[derive(Debug, Clone)]
pub struct Limiter {
    /// The limit it enforces.
    pub limit: RateLimit,
    /// The per-client buckets, in fixed memory.
    pub rate: Arc<RateLimiter>,
    /// `RateLimit-Policy` and friends.
    pub fields: Arc<RateLimitFields>,
}

impl Limiter {
    /// A limiter for `limit` named `name` in the 429's fields, reusing
    /// `previous` (and so every client's bucket) when it enforced the same
    /// limit: a reload does not reset anyone's rate.
    fn new(name: &str, limit: RateLimit, previous: Option<&Limiter>) -> Self {
        if let Some(p) = previous.filter(|p| p.limit == limit) {
            return p.clone();
        }
        Self {
            limit,
            rate: Arc::new(RateLimiter::new(limit, SketchShape::default())),
            fields: Arc::new(RateLimitFields::new(name, limit)),
        }
    }
}

/// One `[[route]]` with its pool resolved.
#[derive(Debug)]
pub struct RouteRt {
    /// The route as configured.
    pub route: Route,
    /// The pool it sends to.
    pub pool: Arc<Pool>,
    /// The route's own request rate, replacing the `[limits]` one here.
    pub requests: Option<Limiter>,
    /// The route's own upgrade rate, replacing the `[limits]` one here.
    pub upgrades: Option<Limiter>,
}

impl RouteRt {
    /// The largest request body allowed on this route.
    pub fn max_body_bytes(&self, limits: &Limits) -> u64 {
        self.route
            .limits
            .max_body_bytes
            .unwrap_or(limits.max_body_bytes)
    }
}

/// One `[[listener]]` as it runs.
#[derive(Debug)]
pub struct ListenerRt {
    /// The listener as configured.
    pub settings: Listener,
    /// Its TLS, when it terminates TLS.
    pub tls: Option<ServerTls>,
}

impl ListenerRt {
    /// `Strict-Transport-Security` for responses on this listener.
    pub fn hsts(&self) -> Option<&str> {
        self.settings.tls.as_ref().and_then(|t| t.hsts.as_deref())
    }

    /// For a plain listener with `redirect_https`: the `Location` of the 308
    /// for a request to `host` with `target` (path and query), unless the
    /// path is one of `redirect_except`.
    pub fn redirect_for(&self, host: &str, target: &[u8]) -> Option<String> {
        let port = self.settings.redirect_https?;
        let target = std::str::from_utf8(target).ok()?;
        if self
            .settings
            .redirect_except
            .iter()
            .any(|prefix| target.starts_with(prefix.as_str()))
        {
            return None;
        }
        let name = strip_port(host);
        if name.is_empty() {
            return None;
        }
        Some(if port == 443 {
            format!("https://{name}{target}")
        } else {
            format!("https://{name}:{port}{target}")
        })
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest
            .split(']')
            .next()
            .map_or(host, |h| &host[..h.len() + 2]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The limits as configured, plus the limiter state that enforces them.
#[derive(Debug)]
pub struct LimitsRt {
    /// `[limits]`.
    pub settings: Limits,
    /// `requests_per_second` per client identity.
    pub requests: Option<Limiter>,
    /// `websocket_upgrades_per_second` per client identity.
    pub upgrades: Option<Limiter>,
}

/// Everything the request path needs, derived from one config.
#[derive(Debug)]
pub struct Runtime {
    /// The config it was built from (for reload diffs and the admin API).
    pub config: Arc<Config>,
    /// Routes in config order; first match wins.
    pub routes: Vec<RouteRt>,
    /// Pools by upstream name.
    pub pools: BTreeMap<String, Arc<Pool>>,
    /// Listeners in config order.
    pub listeners: Vec<ListenerRt>,
    /// Limits and limiter state.
    pub limits: LimitsRt,
    /// Access log settings.
    pub log: LogSettings,
    /// Servers a reload removed whose tunnels are still open (draining); a
    /// later reload that adds the server back takes its state from here.
    pub retired: Vec<Arc<ServerState>>,
}

/// The log settings with a relative access log path made absolute from `base`.
fn resolved_log(log: &LogSettings, base: &Path) -> LogSettings {
    let mut log = log.clone();
    if let crate::config::AccessLog::File(p) = &log.access {
        if p.is_relative() {
            log.access = crate::config::AccessLog::File(base.join(p));
        }
    }
    log
}

/// The swappable handle shared by every part of the proxy.
pub type SharedRuntime = Arc<ArcSwap<Runtime>>;

impl Runtime {
    /// Build the runtime for `config`, carrying server state (health,
    /// counters, admin state, tunnels) and TLS session state over from
    /// `previous`. Relative certificate paths are read from `base`. Errors
    /// (certificate files) carry their TOML paths.
    pub fn build(
        config: &Config,
        previous: Option<&Runtime>,
        base: &Path,
    ) -> Result<Self, ConfigErrors> {
        let mut errors: Vec<ConfigError> = Vec::new();
        let retired_before: &[Arc<ServerState>] = previous.map_or(&[], |p| &p.retired);
        let mut pools = BTreeMap::new();
        for (name, settings) in &config.upstreams {
            let tls = match &settings.tls {
                None => None,
                Some(t) => match UpstreamTlsConfig::build(t, &format!("upstream.{name}"), base) {
                    Ok(t) => Some(Arc::new(t)),
                    Err(e) => {
                        errors.extend(e);
                        None
                    }
                },
            };
            let old = previous.and_then(|p| p.pools.get(name)).map(|p| &**p);
            pools.insert(
                name.clone(),
                Arc::new(Pool::new(settings.clone(), old, retired_before, tls)),
            );
        }
        let routes = config
            .routes
            .iter()
            .enumerate()
            .filter_map(|(i, route)| {
                let pool = pools.get(&route.upstream)?.clone();
                let before = previous.and_then(|p| p.routes.get(i));
                Some(RouteRt {
                    requests: route.limits.requests.map(|l| {
                        Limiter::new("requests", l, before.and_then(|b| b.requests.as_ref()))
                    }),
                    upgrades: route.limits.websocket_upgrades.map(|l| {
                        Limiter::new(
                            "websocket-upgrades",
                            l,
                            before.and_then(|b| b.upgrades.as_ref()),
                        )
                    }),
                    route: route.clone(),
                    pool,
                })
            })
            .collect();
        let mut listeners = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let tls = match &l.tls {
                None => None,
                Some(t) => {
                    let sessions = previous
                        .and_then(|p| p.listeners.get(i))
                        .and_then(|l| l.tls.as_ref())
                        .map(|t| t.sessions.clone())
                        .map_or_else(SessionState::new, Ok);
                    match sessions {
                        Err(e) => {
                            errors.push(ConfigError {
                                path: format!("listener[{i}].tls"),
                                message: format!("TLS session state: {e}"),
                            });
                            None
                        }
                        Ok(sessions) => match ServerTls::build(t, sessions, base) {
                            Ok(t) => Some(t),
                            Err(e) => {
                                errors.extend(e);
                                None
                            }
                        },
                    }
                }
            };
            listeners.push(ListenerRt {
                settings: l.clone(),
                tls,
            });
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let mut runtime = Self {
            config: Arc::new(config.clone()),
            routes,
            pools,
            listeners,
            limits: LimitsRt {
                settings: config.limits.clone(),
                requests: config.limits.requests.map(|l| {
                    Limiter::new(
                        "requests",
                        l,
                        previous.and_then(|p| p.limits.requests.as_ref()),
                    )
                }),
                upgrades: config.limits.websocket_upgrades.map(|l| {
                    Limiter::new(
                        "websocket-upgrades",
                        l,
                        previous.and_then(|p| p.limits.upgrades.as_ref()),
                    )
                }),
            },
            log: resolved_log(&config.log, base),
            retired: Vec::new(),
        };
        if let Some(previous) = previous {
            runtime.retire_removed(previous);
        }
        Ok(runtime)
    }

    /// Servers of `previous` that this runtime no longer has: each gets its
    /// pool's `drain_timeout` to end its tunnels, and is kept in `retired`
    /// while tunnels remain so a later reload can bring it back. Servers that
    /// came back get their drain order taken back.
    fn retire_removed(&mut self, previous: &Runtime) {
        let mut retired = Vec::new();
        let olds = previous
            .pools
            .values()
            .flat_map(|p| p.servers.iter().map(move |s| (p.settings.drain_timeout, s)))
            .chain(previous.retired.iter().map(|s| (Duration::ZERO, s)));
        for (drain, old) in olds {
            if self
                .server_anywhere(old.addr)
                .is_some_and(|s| s.same_state(old))
            {
                continue;
            }
            if old.tunnels.open() > 0
                && !retired.iter().any(|r: &Arc<ServerState>| r.same_state(old))
            {
                if drain > Duration::ZERO
                    || matches!(old.tunnels.order(), crate::tunnel::control::Order::Keep)
                {
                    old.tunnels.drain(drain);
                }
                retired.push(old.clone());
            }
        }
        for pool in self.pools.values() {
            for s in &pool.servers {
                let was_retired = previous.retired.iter().any(|r| r.same_state(s));
                let was_removed_now = retired.iter().any(|r| r.same_state(s));
                if was_retired
                    && !was_removed_now
                    && s.admin_state() == crate::upstream::AdminState::Up
                {
                    s.tunnels.keep();
                }
            }
        }
        self.retired = retired;
    }

    fn server_anywhere(&self, addr: SocketAddr) -> Option<&Arc<ServerState>> {
        self.pools
            .values()
            .flat_map(|p| p.servers.iter())
            .find(|s| s.addr == addr)
    }

    /// Listener `i`.
    pub fn listener(&self, i: usize) -> &ListenerRt {
        &self.listeners[i.min(self.listeners.len().saturating_sub(1))]
    }

    /// The first route matching `host` and `path`.
    pub fn find_route(&self, host: &str, path: &str) -> Option<&RouteRt> {
        self.routes.iter().find(|r| r.route.matches(host, path))
    }

    /// On shutdown, tunnels end spread over this window: the grace period
    /// less the time their close handshakes need.
    pub fn shutdown_window(&self) -> Duration {
        self.config
            .server
            .grace_period
            .saturating_sub(Duration::from_secs(3))
            .min(Duration::from_secs(60))
    }

    /// Wrap a runtime into the shared, swappable handle.
    pub fn shared(self) -> SharedRuntime {
        Arc::new(ArcSwap::from_pointee(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(redirect: Option<u16>) -> ListenerRt {
        ListenerRt {
            settings: Listener {
                listen: "127.0.0.1:80".parse().unwrap(),
                tls: None,
                proxy_protocol: false,
                redirect_https: redirect,
                redirect_except: vec!["/.well-known/acme-challenge/".into()],
            },
            tls: None,
        }
    }

    #[test]
    fn redirects_keep_host_path_and_query() {
        let l = listener(Some(8443));
        assert_eq!(
            l.redirect_for("example.com:8080", b"/a?b=1").as_deref(),
            Some("https://example.com:8443/a?b=1")
        );
        let l443 = listener(Some(443));
        assert_eq!(
            l443.redirect_for("example.com", b"/").as_deref(),
            Some("https://example.com/")
        );
        assert_eq!(
            l443.redirect_for("[::1]:80", b"/x").as_deref(),
            Some("https://[::1]/x")
        );
        assert_eq!(
            l.redirect_for("example.com", b"/.well-known/acme-challenge/t"),
            None
        );
        assert_eq!(listener(None).redirect_for("example.com", b"/"), None);
    }
}
