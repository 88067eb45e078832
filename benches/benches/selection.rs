//! The per-request cost of routing and counting: sticky-key extraction plus
//! consistent-hash selection with bounded load (factor 1.25) at 3, 100 and
//! 1,000 servers, in an idle pool and in a loaded one (every server holding
//! connections near its cap, as a WebSocket pool does), and the per-server
//! stats updates every request makes.
//!
//! Run: `cargo bench -p ringway-benches --bench selection -- --warm-up-time 1
//! --measurement-time 3` (pinned to one core with `taskset -c 1` for the
//! figures in docs/BENCHMARKS.md).

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, Uri};
use ringway_proxy::config::Config;
use ringway_proxy::routing::{select, sticky_key, Selection};
use ringway_proxy::stats::{ActiveGuard, ServerStats};
use ringway_proxy::upstream::Pool;

/// A pool of `n` servers as the config file would give it.
fn pool(n: usize) -> Pool {
    let servers: Vec<String> = (0..n)
        .map(|i| format!("{{ addr = \"10.0.{}.{}:8080\" }}", i / 250, i % 250 + 1))
        .collect();
    let toml = format!(
        "[[listener]]\nlisten = \"127.0.0.1:8080\"\n\n\
         [[route]]\nupstream = \"chat\"\n\n\
         [upstream.chat]\nbalance = \"consistent-hash\"\n\
         hash_key = [\"cookie:sid\", \"query:sid\", \"client-ip\"]\n\
         balance_factor = 1.25\nservers = [{}]\n",
        servers.join(", ")
    );
    let mut config = Config::from_toml_str(&toml).expect("the bench config is valid");
    let settings = config.upstreams.remove("chat").expect("pool chat");
    Pool::new(settings, None, &[], None)
}

/// A request with a session cookie among others, and a query string.
struct Request {
    headers: HeaderMap,
    uri: Uri,
}

fn requests(n: usize) -> Vec<Request> {
    (0..n)
        .map(|i| {
            let mut headers = HeaderMap::new();
            headers.insert("host", "chat.example.com".parse().expect("value"));
            let cookie = format!("theme=dark; sid=session-{i}; lang=en");
            headers.insert("cookie", cookie.parse().expect("value"));
            Request {
                headers,
                uri: "/ws?v=2".parse().expect("uri"),
            }
        })
        .collect()
}

/// Hold connections until every server carries about `per_server` of them.
fn load(pool: &Pool, per_server: usize) -> Vec<Selection> {
    (0..pool.servers.len() * per_server)
        .filter_map(|i| select(pool, Some(format!("held-{i}").as_bytes()), &[]))
        .collect()
}

fn key_and_select(c: &mut Criterion) {
    let reqs = requests(4096);
    let chain = pool(3).settings.hash_key.clone();
    let peer: IpAddr = "192.0.2.1".parse().expect("ip");
    let mut group = c.benchmark_group("key_and_select");
    for n in [3, 100, 1000] {
        for (state, per_server) in [("idle", 0), ("loaded", 20)] {
            group.bench_function(BenchmarkId::new(state, n), |b| {
                // Built here, so a filtered run builds only its own pool.
                let p = pool(n);
                let _held = load(&p, per_server);
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % reqs.len();
                    let r = &reqs[i];
                    let key = sticky_key(&chain, &r.headers, &r.uri, Some(peer));
                    black_box(select(&p, key.as_deref().map(str::as_bytes), &[]))
                })
            });
        }
    }
    group.finish();
}

fn stats_updates(c: &mut Criterion) {
    let stats = Arc::new(ServerStats::default());
    let mut group = c.benchmark_group("stats");
    group.bench_function("record_status", |b| {
        b.iter(|| stats.record_status(black_box(200)))
    });
    group.bench_function("record_latency", |b| {
        b.iter(|| stats.record_latency(black_box(Duration::from_micros(1800))))
    });
    group.bench_function("active_guard", |b| {
        b.iter(|| {
            let mut g = ActiveGuard::new(stats.clone());
            g.mark_websocket();
            black_box(g)
        })
    });
    group.finish();
}

criterion_group!(benches, key_and_select, stats_updates);
criterion_main!(benches);
