//! The demo page over `https://` in headless chromium: a backend node
//! behind the proxy's TLS listener (a test CA's certificate, trusted in the
//! browser by its key alone), the page served over HTTPS opens its
//! WebSocket as `wss://` to the same listener and exchanges a message.

use std::process::Command;
use std::time::Duration;

use ringway_tests::backend::Backend;
use ringway_tests::browser::run_node_script;
use ringway_tests::tls::{LeafOpts, TestCa};
use ringway_tests::Proxy;
use serde_json::{json, Value};

/// The base64 SHA-256 of the public key in `key` (PEM), as chromium's
/// `--ignore-certificate-errors-spki-list` takes it.
fn spki_hash(key: &std::path::Path) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            "set -o pipefail; openssl pkey -in \"$1\" -pubout -outform DER \
             | openssl dgst -sha256 -binary | openssl base64 -A",
        )
        .arg("sh")
        .arg(key)
        .output()
        .expect("run openssl");
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && hash.len() == 44,
        "openssl could not hash the key: {}",
        ringway_tests::printed(&out)
    );
    hash
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_over_https_talks_wss_and_exchanges_a_message() {
    let node = Backend::start("https-node", &[]).await;
    let ca = TestCa::new("ringway demo https CA");
    let site = ca.leaf(
        "site",
        &["localhost"],
        LeafOpts {
            ips: vec![[127, 0, 0, 1].into()],
            ..LeafOpts::default()
        },
    );
    let config = format!(
        "[server]\nthreads = 2\ngrace_period = \"1s\"\n\n[admin]\nlisten = \"{{ADMIN}}\"\n\n\
         [[listener]]\nlisten = \"{{LISTEN}}\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n\n\
         [[route]]\npath_prefix = \"/\"\nupstream = \"app\"\n\n\
         [upstream.app]\nservers = [ {{ addr = \"{}\" }} ]\n",
        site.cert.display(),
        site.key.display(),
        node.addr
    );
    let proxy = Proxy::start(&config).await;
    let origin = format!("https://127.0.0.1:{}", proxy.listen.port());
    let text = "hello over https";
    let input = json!({
        "url": format!("{origin}/"),
        "spki": spki_hash(&site.key),
        "text": text,
    });
    let result: Value = run_node_script("demo-over-https.mjs", &input, Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e}\nproxy log:\n{}", proxy.child.log()));

    assert_eq!(result["status"], 200, "{result}");
    assert_eq!(result["protocol"], "https:", "{result}");
    let ws_prefix = format!("wss://127.0.0.1:{}/ws?", proxy.listen.port());
    let page_ws = result["page_ws_url"].as_str().unwrap_or_default();
    assert!(page_ws.starts_with(&ws_prefix), "{result}");
    let sockets = result["sockets"].as_array().expect("sockets");
    assert!(
        !sockets.is_empty()
            && sockets
                .iter()
                .all(|u| u.as_str().is_some_and(|u| u.starts_with(&ws_prefix))),
        "every WebSocket the page opened is wss: to the proxy: {result}"
    );
    assert_eq!(result["worker"], "https-node", "{result}");
    let received = result["received"].as_array().expect("received");
    assert!(
        received
            .iter()
            .any(|f| f.as_str().is_some_and(|f| f.contains(text))),
        "the message did not come back over the wss: connection: {result}"
    );
    let lines = result["lines"].as_array().expect("lines");
    assert!(
        lines.iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.ends_with(&format!(": {text}")))),
        "{result}"
    );
    // Both the page and its WebSocket came through the TLS listener.
    let stats = proxy.stats().await;
    let handshakes = stats["listeners"][0]["tls_handshakes"].as_u64().unwrap();
    assert!(handshakes >= 1, "{handshakes} TLS handshakes: {stats}");
    let upgrades = stats["upstreams"]["app"]["servers"][0]["websockets_total"]
        .as_u64()
        .unwrap();
    assert!(
        upgrades >= 1,
        "no WebSocket went through the proxy: {stats}"
    );
}
