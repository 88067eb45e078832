//! `ringway-bench-backend`: measure `ringway-backend` (cross-node latency
//! through Redis and in memory, fan-out to many local clients); see
//! `ringway_benches::backend::Options` for the flags.

use std::process::ExitCode;

use clap::Parser;
use ringway_benches::backend::{self, Options};

fn main() -> ExitCode {
    backend::main(Options::parse())
}
