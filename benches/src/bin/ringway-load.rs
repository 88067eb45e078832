//! `ringway-load`: the load of `ringway-bench-proxies` on its own, against
//! anything on loopback; prints its figures as JSON. Pin it away from what
//! it measures: `taskset -c 1 ringway-load ws-echo --url ws://127.0.0.1:8080/ws`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ringway_benches::load::{self, http, tls, ws, Dialer, Target};
use ringway_benches::{driver, procs};

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Keep-alive GETs, one in flight per connection.
    Http,
    /// WebSocket echo, one message in flight per connection.
    WsEcho,
    /// Hold WebSockets and read a process tree's RSS before, while and after.
    WsIdle,
    /// Connect + TLS handshake + GET + close, `-c` loops at once.
    TlsHandshakes,
}

#[derive(Parser)]
#[command(
    name = "ringway-load",
    about = "Loopback load: HTTP, WebSocket echo, idle WebSockets, TLS handshakes"
)]
struct Cli {
    /// What to do.
    #[arg(value_enum)]
    mode: Mode,
    /// Target URL (http, https, ws or wss), a literal 127.0.0.0/8 address.
    #[arg(long)]
    url: String,
    /// Connections (loops at once for tls-handshakes).
    #[arg(short = 'c', visible_short_alias = 'n', long, default_value_t = 32)]
    connections: usize,
    /// Measured window, seconds.
    #[arg(short = 'd', long, default_value_t = 5.0)]
    duration: f64,
    /// Load before the window, seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// http: requests per second in all (default: as fast as answers come).
    #[arg(long)]
    rate: Option<f64>,
    /// ws-echo: bytes per message.
    #[arg(short = 's', long, default_value_t = 64)]
    size: usize,
    /// ws-idle: seconds to hold the connections.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// ws-idle: process (with its descendants) whose RSS is read.
    #[arg(long)]
    rss_pid: Option<u32>,
    /// ws-idle: connections echo-checked after the hold.
    #[arg(long, default_value_t = 100)]
    sample: usize,
    /// ws-idle: seconds after closing before the last reading.
    #[arg(long, default_value_t = 10.0)]
    close_wait: f64,
    /// tls-handshakes: resume sessions.
    #[arg(long)]
    resume: bool,
    /// Source addresses to rotate over, comma-separated (127.0.0.0/8).
    #[arg(long, default_value = "")]
    src: String,
    /// CA certificate (PEM) that a TLS target's certificate is checked against.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Limit of one connect, handshake, request or echo, seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    max_secs: u64,
}

async fn run(cli: Cli) -> anyhow::Result<serde_json::Value> {
    procs::ensure_fd_limit(cli.connections as u64 + 64)?;
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
    let (target, watched) = (Target::parse(&cli.url)?, procs::load_and_softirq());
    let tls = cli
        .ca
        .as_deref()
        .map(|ca| tls::connector(ca, false))
        .transpose()?;
    let dialer = Dialer {
        sources: load::parse_sources(&cli.src)?,
        timeout: secs(cli.timeout),
        tls,
    };
    let (warmup, duration, connections) = (secs(cli.warmup), secs(cli.duration), cli.connections);
    let open = ws::OpenSpec {
        target: target.clone(),
        dialer: dialer.clone(),
        connections,
        ramp: 200,
    };
    Ok(match cli.mode {
        Mode::Http => {
            let rate = cli.rate;
            serde_json::to_value(
                http::run(http::HttpSpec {
                    target,
                    dialer,
                    connections,
                    warmup,
                    duration,
                    rate,
                    watched,
                })
                .await?,
            )?
        }
        Mode::WsEcho => {
            let spec = ws::EchoSpec {
                open,
                size: cli.size,
                warmup,
                duration,
                pace: None,
                watched,
            };
            serde_json::to_value(ws::echo(spec).await?)?
        }
        Mode::WsIdle => {
            let (hold, close_wait) = (secs(cli.hold), secs(cli.close_wait));
            let spec = ws::IdleSpec {
                open,
                hold,
                rss_pid: cli.rss_pid,
                sample: cli.sample,
                close_wait,
            };
            serde_json::to_value(ws::idle(spec).await?)?
        }
        Mode::TlsHandshakes => {
            let ca = cli
                .ca
                .ok_or_else(|| anyhow::anyhow!("tls-handshakes needs --ca"))?;
            let (resume, concurrency) = (cli.resume, connections);
            let spec = tls::HandshakeSpec {
                target,
                dialer,
                ca,
                resume,
                concurrency,
                warmup,
                duration,
                watched,
            };
            serde_json::to_value(tls::handshakes(spec).await?)?
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    driver::drive(None, cli.max_secs, run(cli), |json| {
        println!("{}", serde_json::to_string_pretty(&json)?);
        Ok(())
    })
}
