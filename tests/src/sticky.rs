//! Asking "which server got this key?" through a proxy, many times over.

use futures_util::stream::{self, StreamExt};

/// Where a request carries its sticky key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyVia {
    /// `Cookie: sid=KEY`
    Cookie,
    /// `?sid=KEY`
    Query,
    /// `X-Session-Id: KEY`
    Header,
}

/// The name of the fixture server that answered `GET base/?…` with `key`.
pub async fn served_by(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    via: KeyVia,
) -> Result<String, String> {
    let url = match via {
        KeyVia::Query => format!("{base}/who?sid={key}"),
        _ => format!("{base}/who"),
    };
    let mut req = client.get(&url);
    req = match via {
        KeyVia::Cookie => req.header("Cookie", format!("theme=x; sid={key}")),
        KeyVia::Header => req.header("X-Session-Id", key),
        KeyVia::Query => req,
    };
    let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let name = resp
        .headers()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match name {
        Some(name) if status.is_success() => Ok(name),
        _ => Err(format!("{url} ({via:?} {key}): status {status}")),
    }
}

/// `served_by` for every key, `concurrency` at a time, in key order.
pub async fn map_keys(
    client: &reqwest::Client,
    base: &str,
    keys: &[String],
    via: KeyVia,
    concurrency: usize,
) -> Vec<Result<String, String>> {
    stream::iter(keys.iter())
        .map(|k| served_by(client, base, k, via))
        .buffered(concurrency)
        .collect()
        .await
}

/// `n` distinct keys with a recognisable prefix.
pub fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// A key (`k0`, `k1`, …) that nginx's Ketama ring over `servers` (weight
/// 1 each) maps to `target`, so a test can aim a request at one server.
pub fn key_for(servers: &[std::net::SocketAddr], target: std::net::SocketAddr) -> String {
    let buckets: Vec<pingora_ketama::Bucket> = servers
        .iter()
        .map(|a| pingora_ketama::Bucket::new(*a, 1))
        .collect();
    let ring = pingora_ketama::Continuum::new(&buckets);
    (0..100_000)
        .map(|i| format!("k{i}"))
        .find(|k| ring.node(k.as_bytes()) == Some(target))
        .expect("some key maps to every server")
}
