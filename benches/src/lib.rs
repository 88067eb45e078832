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
//! Everything binds to 127.0.0.1, is bounded in time, and stops by itself.

pub mod client;
pub mod clock;
pub mod fanout;
pub mod latency;
pub mod nodes;
pub mod procs;
pub mod report;
pub mod run;
pub mod stats;
