//! `ringway-load`: loopback load for proxies (keep-alive HTTP, WebSocket
//! echo, idle WebSocket hold with the proxy's RSS; JSON with `--json`).
//! The work is in the `ringway_benches` library; see `load::Cli`.

use std::process::ExitCode;

use clap::Parser;
use ringway_benches::load::{self, Cli};

fn main() -> ExitCode {
    load::main(Cli::parse())
}
