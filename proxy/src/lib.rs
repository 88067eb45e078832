//! Ringway's edge proxy: routes HTTP/1.1, HTTP/2 and WebSocket upgrades to
//! upstream pools with consistent-hash stickiness (nginx-compatible Ketama
//! with bounded load), on Pingora's server, TLS and health checks.
//!
//! A connection's path, in the order it meets the modules:
//! - [`listen`]: listening sockets and worker threads (accept, process cap).
//! - [`conn`]: per-address cap, PROXY protocol, TLS handshake, protocol choice.
//! - [`h1`]: the HTTP/1.1 request path; [`h2`]: the HTTP/2 one (Pingora's).
//! - [`tunnel`]: WebSocket upgrades and the pump after the 101.
//!
//! The decisions they share:
//! - [`routing`] and [`sticky`]: route, sticky key, server (pure).
//! - [`forwarding`]: who the client is; forwarding headers.
//! - [`admission`] over [`limits`]: connection caps and rates.
//!
//! Around them:
//! - [`config`]: the TOML file, validated into plain types with path-named errors.
//! - [`runtime`]: everything built from one config, swapped atomically;
//!   [`reload`]: SIGHUP and friends; [`process`]: state that outlives a runtime.
//! - [`upstream`]: pools, server state, rings; [`health`]: active checks.
//! - [`tls`]: certificates, termination, upstream TLS.
//! - [`limits`]: per-client rates and caps in fixed memory; the 429 fields.
//! - [`proxy_protocol`]: the PROXY v1/v2 header a trusted load balancer sends first.
//! - [`stats`], [`access_log`], [`admin`]: what an operator sees.
//! - [`app`], [`cli`], [`notify`]: start-up, command line, systemd.

pub mod access_log;
pub mod admin;
pub mod admission;
pub mod app;
pub mod bufpool;
pub mod cli;
pub mod config;
pub mod conn;
pub mod forwarding;
pub mod h1;
pub mod h2;
pub mod health;
pub mod limits;
pub mod listen;
pub mod notify;
pub mod process;
pub mod proxy_protocol;
pub mod reload;
pub mod routing;
pub mod runtime;
pub mod stats;
pub mod sticky;
pub mod stream;
pub mod tls;
pub mod tunnel;
pub mod upstream;
