//! Ringway's edge proxy: a Pingora reverse proxy that routes HTTP/1.1
//! requests and WebSocket upgrades to upstream pools with consistent-hash
//! stickiness (nginx-compatible Ketama with bounded load).
//!
//! The request path, in the order a request meets it:
//! - [`service`]: the `ProxyHttp` phases, each calling one of the concepts below.
//! - [`routing`]: route match, sticky key, server choice (pure decisions).
//! - [`forwarding`]: who the client is; `X-Forwarded-*`; hop-by-hop rules.
//! - [`tunnel`]: WebSocket upgrades and the byte pump after the 101.
//!
//! Around it:
//! - [`config`]: the TOML file, validated into plain types with path-named errors.
//! - [`runtime`]: routes and pools built from a config, swapped atomically.
//! - [`upstream`]: pools, server state (admin, health, passive ejection), rings.
//! - [`health`]: the active health-check schedule.
//! - [`limits`]: per-client rates and caps in fixed memory; the 429 fields.
//! - [`proxy_protocol`]: the PROXY v1/v2 header a trusted load balancer sends first.
//! - [`stats`]: per-server counters; [`admin`]: the admin listener that shows them.
//! - [`app`]: wiring Pingora's server; [`cli`]: the command line.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod forwarding;
pub mod health;
pub mod limits;
pub mod proxy_protocol;
pub mod routing;
pub mod runtime;
pub mod service;
pub mod stats;
pub mod tunnel;
pub mod upstream;
