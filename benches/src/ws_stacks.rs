//! `ringway-bench-ws-stacks`: the WebSocket stacks `ringway-backend` could
//! be built on, measured side by side (issue 3: "axum, or hyper with
//! tokio-tungstenite or fastwebsockets; choose on measured merit").
//!
//! Each stack is `ringway-ws-echo --impl <stack>` with one Tokio worker,
//! pinned to the server core; this driver and its load (the
//! [`crate::wsload`] code of `ringway-load`) run pinned to the other core.
//! Rounds visit every stack in a rotating order, each scenario on a fresh
//! process: hold idle WebSockets and read the server's RSS, then echo
//! small messages and read its CPU per message. Medians are reported.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use clap::Parser;
use ringway_tests::{free_addr, target_bin, wait_for_port, Child};

use crate::dial::Target;
use crate::procs::{self, Watched};
use crate::wsload::{self, EchoSpec, IdleSpec, OpenSpec};

/// The stacks, as `ringway-ws-echo --impl` names them.
pub const STACKS: [&str; 3] = ["axum", "axum-small", "fastwebsockets"];

/// `ringway-bench-ws-stacks` command line.
#[derive(Debug, Clone, Parser)]
#[command(
    about = "Measure the WebSocket stacks ringway-backend could use: idle memory and echo CPU"
)]
pub struct Options {
    /// Rounds over the stacks.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Idle WebSockets held per stack.
    #[arg(long, default_value_t = 5000)]
    pub idle: usize,
    /// Echo connections.
    #[arg(long, default_value_t = 200)]
    pub echo_connections: usize,
    /// Messages per echo connection.
    #[arg(long, default_value_t = 500)]
    pub echo_messages: usize,
    /// Bytes per echo message.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Core of the server.
    #[arg(long, default_value_t = 0)]
    pub server_core: usize,
    /// Core of this driver and its load.
    #[arg(long, default_value_t = 1)]
    pub load_core: usize,
}

/// One stack's figures in one round.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// (held − before) ÷ connections, KiB.
    pub idle_kib_per_conn: f64,
    /// Echoes per second.
    pub echo_msgs_per_sec: f64,
    /// Echo round trip p99, ms.
    pub echo_rtt_p99_ms: f64,
    /// Server CPU per echoed message, µs.
    pub server_us_per_msg: f64,
}

/// An echo server of one stack, pinned with `taskset`.
struct Server {
    addr: SocketAddr,
    child: Child,
}

impl Server {
    async fn start(stack: &str, core: usize) -> anyhow::Result<Server> {
        let addr = free_addr();
        let mut cmd = Command::new("taskset");
        cmd.arg("-c")
            .arg(core.to_string())
            .arg(target_bin("ringway-ws-echo"))
            .args(["--impl", stack, "--threads", "1", "--listen"])
            .arg(addr.to_string());
        let child = Child::spawn(cmd);
        wait_for_port(addr, Duration::from_secs(10))
            .await
            .map_err(|e| anyhow::anyhow!("{stack}: {e}\n{}", child.log()))?;
        Ok(Server { addr, child })
    }

    fn open(&self, connections: usize, ramp: usize) -> anyhow::Result<OpenSpec> {
        let sources: Vec<IpAddr> = (2..10).map(|i| IpAddr::from([127, 0, 0, i])).collect();
        Ok(OpenSpec {
            target: Target::parse(&format!("ws://{}/ws", self.addr), "ws")?,
            connections,
            ramp,
            sources,
            key_prefix: "s".into(),
            timeout: Duration::from_secs(10),
        })
    }
}

/// Measure one stack once: idle memory on a fresh process, then echo on another.
pub async fn sample(stack: &str, opts: &Options) -> anyhow::Result<Sample> {
    let server = Server::start(stack, opts.server_core).await?;
    let idle = wsload::idle(IdleSpec {
        open: server.open(opts.idle, 200)?,
        hold: Duration::from_secs(5),
        rss_pid: Some(server.child.pid()),
        rss_children: false,
        sample: 100,
        after_close: Duration::from_secs(1),
    })
    .await?;
    anyhow::ensure!(
        idle.opened.opened == opts.idle && idle.sample_ok == idle.sample_checked,
        "{stack}: idle run incomplete: {:?}",
        idle.opened
    );
    drop(server);

    let server = Server::start(stack, opts.server_core).await?;
    let echo = wsload::echo(EchoSpec {
        open: server.open(opts.echo_connections, 100)?,
        messages: opts.echo_messages,
        size: opts.size,
        watched: vec![Watched {
            name: "server".into(),
            pid: server.child.pid(),
        }],
    })
    .await?;
    anyhow::ensure!(
        echo.mismatches == 0 && echo.errors == 0 && echo.echoed > 0,
        "{stack}: echo run failed: {:?}",
        echo.error_samples
    );
    let server_pct = echo
        .cpu
        .iter()
        .find(|c| c.name == "server")
        .map_or(0.0, |c| c.percent_of_core);
    Ok(Sample {
        idle_kib_per_conn: idle.kib_per_connection.unwrap_or(f64::NAN),
        echo_msgs_per_sec: echo.messages_per_sec,
        echo_rtt_p99_ms: echo.rtt.p99_ms,
        server_us_per_msg: server_pct / 100.0 * echo.window_secs * 1e6 / echo.echoed as f64,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Run every round and print the medians; exits non-zero on any failure.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    procs::pin_self(opts.load_core)?;
    procs::ensure_fd_limit(opts.idle as u64 + 1000)?;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); STACKS.len()];
    for round in 0..opts.rounds {
        for k in 0..STACKS.len() {
            let i = (k + round) % STACKS.len();
            let s = sample(STACKS[i], &opts).await?;
            println!(
                "round {} {:<15} idle {:6.1} KiB/conn   echo {:8.0} msgs/s  p99 {:6.2} ms  server {:5.2} µs/msg",
                round + 1,
                STACKS[i],
                s.idle_kib_per_conn,
                s.echo_msgs_per_sec,
                s.echo_rtt_p99_ms,
                s.server_us_per_msg
            );
            samples[i].push(s);
        }
    }
    println!("\nmedians of {} rounds", opts.rounds);
    println!("stack            KiB/conn     msgs/s   RTT p99 ms   server µs/msg");
    for (stack, s) in STACKS.iter().zip(&samples) {
        let m = |f: fn(&Sample) -> f64| median(s.iter().map(f).collect());
        println!(
            "{:<15} {:9.1} {:10.0} {:12.2} {:15.2}",
            stack,
            m(|s| s.idle_kib_per_conn),
            m(|s| s.echo_msgs_per_sec),
            m(|s| s.echo_rtt_p99_ms),
            m(|s| s.server_us_per_msg)
        );
    }
    Ok(())
}
