//! `ringway-bench-backend`: measure `ringway-backend` (cross-node latency
//! through Redis and in memory, fan-out to many local clients). The work
//! is in the `ringway_benches` library; see `run::Options` for the flags.

use std::process::ExitCode;

use clap::Parser;
use ringway_benches::run::{self, Options};

fn main() -> ExitCode {
    run::main(Options::parse())
}
