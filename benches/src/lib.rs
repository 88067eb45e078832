//! Benchmarks of Ringway, run against the real binaries on loopback.
//!
//! `ringway-bench-backend` (in `src/bin/`) measures `ringway-backend`:
//!
//! - [`latency`]: cross-node publish-to-deliver latency at a paced rate,
//!   through Redis and, as the baseline, through the in-process broker of
//!   one `--nodes 2` process. The difference is what Redis adds.
//! - [`fanout`]: how many messages per second one node delivers to many
//!   local clients, and how late they arrive.
//!
//! The parts they share: [`nodes`] starts Redis and nodes with the
//! `ringway-tests` harness (so every process dies with its handle),
//! [`client`] is a lean protocol client (paced publisher, counting
//! receiver), [`clock`] is the one monotonic time base of the process,
//! [`stats`] turns samples and Prometheus histograms into percentiles,
//! [`procs`] watches CPU use and kills children on a panic, [`report`]
//! prints the table and the JSON, and [`run`] holds the command line and
//! the order of the scenarios.
//!
//! `ringway-load` is a load generator for proxies ([`load`] is its command
//! line): keep-alive HTTP ([`httpload`]), WebSocket echo and idle hold with
//! a process' RSS ([`wsload`]), every connection carrying its sticky key
//! as `?sid=` and `X-Session-Id` ([`dial`]); JSON with `--json`.
//!
//! `ringway-bench-proxies` compares `ringway-proxy` with nginx, HAProxy and
//! Caddy in one interleaved run: [`peers`] writes their configs and starts
//! them (and the backend) pinned to their cores, [`proxies`] runs the
//! rounds through `ringway-load` and takes medians and ratios, and
//! [`proxies_report`] prints the tables.
//!
//! `ringway-bench-ws-stacks` ([`ws_stacks`]) measures the WebSocket stacks
//! the backend could be built on, each as a `ringway-ws-echo` server.
//!
//! Every driver runs inside [`driver`]: a time limit, Ctrl-C and SIGTERM,
//! the report and its JSON.
//!
//! Everything binds to 127.0.0.0/8, is bounded in time, and stops by itself.

pub mod client;
pub mod clock;
pub mod dial;
pub mod driver;
pub mod fanout;
pub mod httpload;
pub mod latency;
pub mod load;
pub mod nodes;
pub mod peers;
pub mod procs;
pub mod proxies;
pub mod proxies_report;
pub mod report;
pub mod run;
pub mod stats;
pub mod ws_stacks;
pub mod wsload;
