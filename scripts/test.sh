#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this):
# rustfmt check, clippy with warnings as errors on every target, then every
# test, unit and end-to-end. The end-to-end tests start real redis-server,
# nginx, ringway-backend and ringway-proxy processes on loopback, and drive
# the demo page in headless chromium (playwright-core, from tests/browser's
# package-lock.json); missing system packages and the npm package are
# installed first when this user may.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

ensure_build_packages
ensure_packages redis-server:redis-server redis-cli:redis-server nginx:nginx systemd-analyze:systemd \
  chromium:chromium node:nodejs npm:npm
ensure_browser_modules

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo build (the binaries the end-to-end tests start)"
cargo build --workspace --bins --locked
echo "==> cargo test"
cargo test --workspace --locked "$@"
echo "==> all tests passed"
