//! `ringway-ws-echo`: the same WebSocket echo server on the stacks issue 3
//! let us choose between, so the choice for `ringway-backend` rests on
//! numbers (`docs/BENCHMARKS.md`, "WebSocket server stack"):
//!
//! - `axum`: axum 0.8's `WebSocketUpgrade` (hyper + tokio-tungstenite),
//!   default buffers, as `ringway-backend` used it first;
//! - `axum-small`: the same with 8 KiB read and write buffers;
//! - `fastwebsockets`: hyper 1 + fastwebsockets 0.10, as its own example.
//!
//! Every variant answers `GET /ws?…` with an upgrade and echoes text and
//! binary messages; it runs on a Tokio runtime of `--threads` workers with
//! jemalloc, like the backend. Measure it with `ringway-load`.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Which stack serves the WebSockets.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Stack {
    Axum,
    AxumSmall,
    Fastwebsockets,
}

#[derive(Debug, Parser)]
#[command(about = "A WebSocket echo server on one of the stacks ringway-backend could use")]
struct Opts {
    /// The stack.
    #[arg(long = "impl", value_enum)]
    stack: Stack,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let opts = Opts::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.listen).await?;
        println!("ready {} {:?}", listener.local_addr()?, opts.stack);
        match opts.stack {
            Stack::Axum => axum_echo::serve(listener, None).await,
            Stack::AxumSmall => axum_echo::serve(listener, Some(8 * 1024)).await,
            Stack::Fastwebsockets => fast_echo::serve(listener).await,
        }
    })
}

/// axum's `WebSocketUpgrade`, optionally with smaller buffers.
mod axum_echo {
    use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
    use axum::response::Response;
    use axum::routing::get;
    use axum::Router;
    use tokio::net::TcpListener;

    pub async fn serve(listener: TcpListener, buffers: Option<usize>) -> anyhow::Result<()> {
        let app = Router::new().route(
            "/ws",
            get(move |upgrade: WebSocketUpgrade| upgrade_with(upgrade, buffers)),
        );
        axum::serve(listener, app).await?;
        Ok(())
    }

    async fn upgrade_with(upgrade: WebSocketUpgrade, buffers: Option<usize>) -> Response {
        let upgrade = match buffers {
            Some(size) => upgrade.read_buffer_size(size).write_buffer_size(size),
            None => upgrade,
        };
        upgrade.on_upgrade(echo)
    }

    async fn echo(mut socket: WebSocket) {
        while let Some(Ok(msg)) = socket.recv().await {
            let reply = match msg {
                Message::Text(_) | Message::Binary(_) => msg,
                Message::Close(_) => return,
                _ => continue,
            };
            if socket.send(reply).await.is_err() {
                return;
            }
        }
    }
}

/// hyper 1 with fastwebsockets' upgrade, as in fastwebsockets' echo example.
mod fast_echo {
    use fastwebsockets::{upgrade, FragmentCollector, OpCode, WebSocketError};
    use http_body_util::Empty;
    use hyper::body::{Bytes, Incoming};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use tokio::net::TcpListener;

    pub async fn serve(listener: TcpListener) -> anyhow::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = http1::Builder::new()
                    .serve_connection(io, service_fn(upgrade_request))
                    .with_upgrades()
                    .await;
            });
        }
    }

    async fn upgrade_request(
        mut req: Request<Incoming>,
    ) -> Result<Response<Empty<Bytes>>, WebSocketError> {
        let (response, socket) = upgrade::upgrade(&mut req)?;
        tokio::spawn(async move {
            let Ok(socket) = socket.await else { return };
            let mut ws = FragmentCollector::new(socket);
            while let Ok(frame) = ws.read_frame().await {
                let echo = match frame.opcode {
                    OpCode::Close => return,
                    OpCode::Text | OpCode::Binary => frame,
                    _ => continue,
                };
                if ws.write_frame(echo).await.is_err() {
                    return;
                }
            }
        });
        Ok(response)
    }
}
