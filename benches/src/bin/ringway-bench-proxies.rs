//! `ringway-bench-proxies`: ringway-proxy against nginx, HAProxy and Caddy
//! in one interleaved run (HTTP, WebSocket echo, idle WebSocket memory).
//! The work is in the `ringway_benches` library; see `proxies::Options`.

use std::process::ExitCode;

use clap::Parser;
use ringway_benches::proxies::{self, Options};

fn main() -> ExitCode {
    proxies::main(Options::parse())
}
