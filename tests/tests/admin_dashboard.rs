//! The HTML dashboard in headless Chromium: every configured server shows
//! with its state, a drain sent to the API shows as "draining" within the
//! page's refresh period, the page's own buttons work once the token is
//! entered, it fits a phone's width, and it requests nothing from anywhere
//! but the admin listener. Screenshots: target/test-artifacts/.

use std::time::Duration;

use ringway_tests::browser;
use ringway_tests::configs::ProxyConfig;
use ringway_tests::{Fixture, FixtureOpts, Proxy};
use serde_json::json;

const TOKEN: &str = "ringway-dashboard-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_server_and_follows_a_drain() {
    let fx = Fixture::start(&["a", "b", "c"], FixtureOpts::default()).await;
    let config = ProxyConfig {
        admin_extra: format!("token = \"{TOKEN}\""),
        ..ProxyConfig::over(fx.addrs.values().copied())
    };
    let proxy = Proxy::start(&config.toml()).await;
    for i in 0..20 {
        let _ = ringway_tests::http_client()
            .get(proxy.url(&format!("/?sid={i}")))
            .send()
            .await
            .unwrap();
    }
    let servers: Vec<_> = fx
        .addrs
        .values()
        .map(|a| json!({ "upstream": "app", "addr": a.to_string() }))
        .collect();
    let drained = fx.addr("b").to_string();
    let artifacts = browser::artifact_dir();
    let args = json!({
        "admin": proxy.admin.to_string(),
        "token": TOKEN,
        "servers": servers,
        "drain": { "upstream": "app", "addr": drained },
        "artifacts": artifacts,
    });
    let outcome = browser::run("admin-dashboard", args, Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e}\nproxy log:\n{}", proxy.child.log()));
    let r = &outcome.result;

    for addr in fx.addrs.values() {
        assert_eq!(r["initial_states"][format!("app/{addr}")], "up", "{r}");
    }
    assert_eq!(r["charts"], 1, "one chart per upstream: {r}");
    assert_eq!(r["token_box"], true, "{r}");
    assert_eq!(
        r["buttons_before_token"], false,
        "read-only without the token: {r}"
    );
    let refresh = r["refresh_ms"].as_u64().unwrap();
    let drained_after = r["drained_after_ms"].as_u64().unwrap();
    // Within one refresh period, plus slack for a slow machine.
    assert!(drained_after <= refresh + 2_000, "{r}");
    assert_eq!(r["token_kept"], true, "{r}");
    let phone = &r["phone"];
    assert!(
        phone["pageWidth"].as_u64() <= phone["viewport"].as_u64(),
        "the page is wider than a phone: {r}"
    );
    assert_eq!(r["phone_button_visible"], true, "{r}");
    // The page's "ready" button put b back.
    let doc = proxy.stats().await;
    let b = doc["upstreams"]["app"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["addr"] == drained)
        .unwrap()
        .clone();
    assert_eq!(b["state"], "up", "{doc}");

    let own = format!("http://{}/", proxy.admin);
    let foreign: Vec<_> = outcome
        .requests
        .iter()
        .filter(|u| !u.starts_with(&own))
        .collect();
    assert!(
        foreign.is_empty(),
        "requests outside the admin listener: {foreign:?}"
    );
    assert!(outcome.requests.iter().any(|u| u.ends_with("/stats.json")));
    assert!(outcome.page_errors.is_empty(), "{:?}", outcome.page_errors);
    for file in ["admin-dashboard.png", "admin-dashboard-phone.png"] {
        let size = std::fs::metadata(artifacts.join(file)).map_or(0, |m| m.len());
        assert!(size > 10_000, "{file}: {size} bytes");
    }
}
