//! The running configuration: routes and pools, built from a validated
//! [`Config`] and swapped as one value.
//!
//! Architecture invariant: a request loads the runtime once, at its start,
//! and uses that snapshot to the end, so a reload (an atomic pointer swap)
//! never changes the rules under a request that is already running.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;

use crate::config::{Config, Route};
use crate::upstream::Pool;

/// Everything the request path needs, derived from one config.
#[derive(Debug)]
pub struct Runtime {
    /// Routes in config order; first match wins.
    pub routes: Vec<Route>,
    /// Pools by upstream name.
    pub pools: BTreeMap<String, Arc<Pool>>,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
}

/// The swappable handle shared by the proxy service, health checks and admin.
pub type SharedRuntime = Arc<ArcSwap<Runtime>>;

impl Runtime {
    /// Build the runtime for `config`, carrying server state (health,
    /// counters) over from `previous` for servers that stay.
    pub fn build(config: &Config, previous: Option<&Runtime>) -> Self {
        let pools = config
            .upstreams
            .iter()
            .map(|(name, settings)| {
                let old = previous.and_then(|p| p.pools.get(name)).map(|p| &**p);
                (name.clone(), Arc::new(Pool::new(settings.clone(), old)))
            })
            .collect();
        Self {
            routes: config.routes.clone(),
            pools,
            trusted_proxies: config.limits.trusted_proxies.clone(),
        }
    }

    /// Wrap a runtime into the shared, swappable handle.
    pub fn shared(self) -> SharedRuntime {
        Arc::new(ArcSwap::from_pointee(self))
    }
}
