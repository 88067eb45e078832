#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this):
# rustfmt check, clippy with warnings as errors on every target, then every
# test, unit and end-to-end. The end-to-end tests start real redis-server,
# nginx, ringway-backend and ringway-proxy processes on loopback, and a
# headless chromium for the dashboard; missing
# system packages are installed first when this user may.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

ensure_build_packages
ensure_packages redis-server:redis-server redis-cli:redis-server nginx:nginx systemd-analyze:systemd
# Browser tests: Debian's chromium, driven by playwright-core (tests/browser, npm ci on first use).
ensure_packages chromium:chromium node:nodejs npm:npm

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo build (the binaries the end-to-end tests start)"
cargo build --workspace --bins --locked
echo "==> cargo test"
cargo test --workspace --locked "$@"
echo "==> all tests passed"
