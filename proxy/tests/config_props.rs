//! Property test of the config contract (issue 6, item 6): every config that
//! validation accepts starts and runs without a panic.
//!
//! Config texts are generated key by key from lists of valid and invalid
//! values (zero and huge durations, out-of-range counts, control characters
//! in hosts, odd paths, weights 0/1/1000/1001, empty server lists, wrong
//! types…), each value knowing whether it is valid and at which TOML path
//! it must be reported. For every text:
//! - `Config::from_toml_str` returns without a panic;
//! - a text made only of valid values is accepted, and one with an invalid
//!   value is rejected with an error at that value's path (a wrong type
//!   drops its whole table, so errors under it are not required);
//! - an accepted config builds a runtime, and one health-check round runs
//!   for every pool that has checks, against closed loopback ports: each
//!   server records exactly one failed check, and nothing panics.
//!
//! Tests run in the dev profile, where a panic fails the test (the release
//! profile aborts instead, which is what this test protects against).

#[path = "config_props/document.rs"]
mod document;
#[path = "config_props/process.rs"]
mod process;
#[path = "config_props/traffic.rs"]
mod traffic;
#[path = "config_props/values.rs"]
mod values;

use std::cell::Cell;
use std::net::TcpListener;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use ringway_proxy::config::Config;
use ringway_proxy::health::check_once;
use ringway_proxy::runtime::Runtime;

use document::{generated, write};
use values::{Doc, Mode};

/// Loopback ports nothing listens on: bound, then released.
fn closed_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// Judge one generated config; see the module comment for the property.
fn check(doc: &Doc, tokio: &tokio::runtime::Runtime) -> Result<(), TestCaseError> {
    let expect = &doc.expect;
    let config = match Config::from_toml_str(&doc.text) {
        Err(errors) => {
            prop_assert!(
                !expect.valid(),
                "a valid config was rejected:\n{}\n---\n{errors}",
                doc.text
            );
            for want in &expect.errors {
                if expect.dropped.iter().any(|d| want.starts_with(d.as_str())) {
                    continue;
                }
                prop_assert!(
                    errors.0.iter().any(|e| &e.path == want),
                    "no error at {want}:\n{}\n---\n{errors}",
                    doc.text
                );
            }
            return Ok(());
        }
        Ok(config) => config,
    };
    prop_assert!(
        expect.valid(),
        "accepted, but errors were expected at {:?} (dropped tables {:?}):\n{}",
        expect.errors,
        expect.dropped,
        doc.text
    );
    // Certificate files are not generated here (the TLS tests cover them):
    // listeners run without TLS and upstream TLS trusts the system roots.
    let mut config = config;
    for l in &mut config.listeners {
        l.tls = None;
    }
    for u in config.upstreams.values_mut() {
        if let Some(t) = &mut u.tls {
            t.ca_file = None;
        }
    }
    let runtime = match Runtime::build(&config, None, std::path::Path::new("")) {
        Ok(r) => r,
        Err(e) => {
            prop_assert!(false, "the runtime did not build: {e}\n{}", doc.text);
            unreachable!()
        }
    };
    let round = tokio.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), check_once(&runtime)).await
    });
    prop_assert!(
        round.is_ok(),
        "a health-check round against closed ports did not finish"
    );
    for pool in runtime.pools.values() {
        let want = u64::from(pool.health_check().is_some());
        for server in &pool.servers {
            prop_assert_eq!(
                server.stats.check_failures.load(Relaxed),
                want,
                "{} in {}",
                server.addr,
                pool.name()
            );
        }
    }
    Ok(())
}

#[test]
fn every_accepted_config_builds_and_checks_without_a_panic() {
    let ports = closed_ports(3);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let strategy = prop_oneof![
        4 => generated(Mode::Clean),
        2 => generated(Mode::Rare),
        1 => generated(Mode::Heavy),
    ];
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 64,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let (accepted, rejected) = (Cell::new(0u32), Cell::new(0u32));
    let result = runner.run(&strategy, |g| {
        let doc = write(&g, &ports);
        check(&doc, &tokio)?;
        let count = if doc.expect.valid() {
            &accepted
        } else {
            &rejected
        };
        count.set(count.get() + 1);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (accepted, rejected) = (accepted.get(), rejected.get());
    println!("{accepted} configs accepted and checked, {rejected} rejected");
    assert!(accepted >= 16, "too few accepted configs: {accepted}");
    assert!(rejected >= 4, "too few rejected configs: {rejected}");
}
