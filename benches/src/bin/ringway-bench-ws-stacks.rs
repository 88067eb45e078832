//! `ringway-bench-ws-stacks`: see [`ringway_benches::ws_stacks`].

use clap::Parser;
use ringway_benches::ws_stacks::{self, Options};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ringway_benches::procs::kill_children_on_panic();
    ws_stacks::run(Options::parse()).await
}
