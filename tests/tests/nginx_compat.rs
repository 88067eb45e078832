//! Ringway's ring is nginx's: for the same server list (with weights), the
//! same `sid` reaches the same server through Ringway and through a real
//! nginx running `hash $arg_sid consistent`. A site moving from nginx keeps
//! its users where they are.

use ringway_tests::configs::ProxyConfig;
use ringway_tests::sticky::{keys, map_keys, KeyVia};
use ringway_tests::{http_client, Fixture, FixtureOpts, Nginx, Proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ringway_and_nginx_pick_the_same_server_for_10000_keys() {
    let names = ["n0", "n1", "n2", "n3", "n4"];
    let fx = Fixture::start(&names, FixtureOpts::default()).await;
    // Unequal weights too: nginx puts 160 points per unit of weight.
    let servers: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (fx.addr(n), if i == 1 { 3 } else { 1 }))
        .collect();

    let upstream_lines: String = servers
        .iter()
        .map(|(a, w)| format!("    server {a} weight={w};\n"))
        .collect();
    let nginx = Nginx::start(&format!(
        "upstream app {{\n    hash $arg_sid consistent;\n{upstream_lines}}}\n\
         server {{\n    listen {{LISTEN}};\n    location / {{ proxy_pass http://app; }}\n}}\n"
    ))
    .await;
    let config = ProxyConfig {
        servers: servers.clone(),
        hash_key: vec!["query:sid"],
        ..ProxyConfig::default()
    };
    let proxy = Proxy::start(&config.toml()).await;

    let client = http_client();
    let keys = keys("sid-", 10_000);
    let via_nginx = map_keys(
        &client,
        &format!("http://{}", nginx.listen),
        &keys,
        KeyVia::Query,
        16,
    )
    .await;
    let via_ringway = map_keys(&client, &proxy.url(""), &keys, KeyVia::Query, 16).await;
    let mut differ = Vec::new();
    for ((key, n), r) in keys.iter().zip(via_nginx).zip(via_ringway) {
        let (n, r) = (n.expect("nginx answers"), r.expect("ringway answers"));
        if n != r {
            differ.push(format!("{key}: nginx {n}, ringway {r}"));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of 10000 keys differ, e.g. {:?}",
        differ.len(),
        &differ[..differ.len().min(5)]
    );
}
