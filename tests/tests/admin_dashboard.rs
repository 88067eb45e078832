//! The HTML dashboard in headless Chromium: every configured server shows
//! with its state, a drain the test sends to the API shows as "draining"
//! within the page's refresh period, the page's own buttons work once the
//! token is entered, it fits a phone's width, and it requests nothing from
//! anywhere but the admin listener. Screenshots: `target/test-artifacts/`
//! (`admin-dashboard.png`, `admin-dashboard-phone.png`).

use std::time::Duration;

use ringway_tests::browser::{artifacts_dir, NodeScript};
use ringway_tests::configs::ProxyConfig;
use ringway_tests::{http_client, Fixture, FixtureOpts, Proxy};
use serde_json::{json, Value};

const TOKEN: &str = "ringway-dashboard-token-0123456789";

fn state_of(doc: &Value, addr: &str) -> String {
    doc["upstreams"]["app"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["addr"] == addr)
        .map(|s| s["state"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("{addr} not in {doc}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_server_and_follows_a_drain() {
    let fx = Fixture::start(&["a", "b", "c"], FixtureOpts::default()).await;
    let config = ProxyConfig {
        admin_extra: format!("token = \"{TOKEN}\""),
        ..ProxyConfig::over(fx.addrs.values().copied())
    };
    let proxy = Proxy::start(&config.toml()).await;
    for i in 0..20 {
        let r = http_client()
            .get(proxy.url(&format!("/?sid={i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let servers: Vec<Value> = fx
        .addrs
        .values()
        .map(|a| json!({ "upstream": "app", "addr": a.to_string() }))
        .collect();
    let drained = fx.addr("b").to_string();
    let artifacts = artifacts_dir();
    for shot in ["admin-dashboard.png", "admin-dashboard-phone.png"] {
        let _ = std::fs::remove_file(artifacts.join(shot));
    }
    let input = json!({
        "admin": proxy.admin.to_string(),
        "token": TOKEN,
        "servers": servers,
        "drain": { "upstream": "app", "addr": drained },
        "artifacts": artifacts,
    });
    let wait = Duration::from_secs(60);
    let mut script = NodeScript::start("admin-dashboard.mjs", &input);

    let question = script.next(wait).await.unwrap();
    assert_eq!(question["await"]["drain"]["addr"], drained, "{question}");
    let resp = http_client()
        .post(proxy.admin_url(&format!("/api/upstreams/app/servers/{drained}/drain")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(state_of(&proxy.stats().await, &drained), "draining");
    script.reply(&json!({ "drained": true })).await.unwrap();
    let r = script
        .finish(wait)
        .await
        .unwrap_or_else(|e| panic!("{e}\nproxy log:\n{}", proxy.child.log()));

    for addr in fx.addrs.values() {
        assert_eq!(r["initial_states"][format!("app/{addr}")], "up", "{r}");
    }
    assert_eq!(r["charts"], 1, "one chart per upstream: {r}");
    assert_eq!(r["token_box"], true, "{r}");
    assert_eq!(
        r["buttons_before_token"], false,
        "read-only without the token: {r}"
    );
    // Within one refresh period, plus slack for a slow machine.
    let refresh = r["refresh_ms"].as_u64().unwrap();
    assert!(
        r["drained_after_ms"].as_u64().unwrap() <= refresh + 2_000,
        "{r}"
    );
    assert_eq!(r["token_kept"], true, "{r}");
    assert!(
        r["phone"]["page_width"].as_u64() <= r["phone"]["viewport"].as_u64(),
        "the page is wider than a phone: {r}"
    );
    assert_eq!(r["phone_button_visible"], true, "{r}");
    // The page's "ready" button put the server back.
    assert_eq!(state_of(&proxy.stats().await, &drained), "up");

    let own = format!("http://{}/", proxy.admin);
    let requests: Vec<&str> = r["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    let foreign: Vec<&&str> = requests.iter().filter(|u| !u.starts_with(&own)).collect();
    assert!(
        foreign.is_empty(),
        "requests outside the admin listener: {foreign:?}"
    );
    assert!(requests.iter().any(|u| u.ends_with("/stats.json")));
    assert!(requests.iter().any(|u| u.contains("/api/upstreams/")));
    assert_eq!(r["page_errors"], json!([]), "{r}");
    for shot in ["admin-dashboard.png", "admin-dashboard-phone.png"] {
        let size = std::fs::metadata(artifacts.join(shot)).map_or(0, |m| m.len());
        assert!(size > 10_000, "{shot}: {size} bytes");
    }
}
