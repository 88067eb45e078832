//! Benchmarks of Ringway, run against the real binaries on loopback. Three
//! programs (`src/bin/`), each a few lines over the pieces below:
//!
//! - `ringway-bench-proxies`: ringway-proxy against nginx, HAProxy and
//!   Caddy. [`scenarios`] is the list of what is measured, [`visits`] how
//!   each scenario visits one peer; [`compare`] runs the list in
//!   interleaved rounds and takes medians and ratios; [`report`] and
//!   [`plot`] turn that into markdown and PNG charts.
//! - `ringway-bench-backend`: ringway-backend's cross-node latency and
//!   fan-out ([`backend`]).
//! - `ringway-load`: the load of [`load`] on its own, against anything on
//!   loopback.
//!
//! Shared pieces: [`harness`] starts, reloads and stops the proxies and
//! their backend (configs from [`peers`]); [`load`] generates HTTP,
//! WebSocket and TLS load; [`procs`] reads CPU and memory from `/proc`;
//! [`stats`] makes percentiles and medians; [`machine`] says where a run was
//! made; [`driver`] is the outer frame (time limit, signals, output).
//!
//! Dependencies point one way: compare → scenarios → visits → harness,
//! load → procs, stats; report and plot read compare's results.
//! Everything binds to 127.0.0.0/8, is bounded in time, and stops by itself.

pub mod backend;
pub mod compare;
pub mod driver;
pub mod harness;
pub mod load;
pub mod machine;
pub mod peers;
pub mod plot;
pub mod procs;
pub mod report;
pub mod scenarios;
pub mod stats;
pub mod visits;
