#!/usr/bin/env bash
# The long chaos run (CI runs a 25 s form in tests/tests/backend_chaos.rs):
# 200 clients in 10 rooms behind ringway-proxy and three ringway-backend
# nodes, a node killed with SIGKILL every 10 s and restarted, Redis
# (appendfsync always) restarted once. Runs twice: declared durable
# (REDIS_DURABLE=1: 0 lost, 0 duplicated, 0 out of order, 0 resets) and not
# (resets allowed, losses not). Exits 1 if either run broke its promise.
#
# Usage: scripts/chaos.sh [SECONDS] [extra ringway-chaos flags, e.g. --clients 400]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

ensure_build_packages
ensure_packages redis-server:redis-server redis-cli:redis-server
secs=${1:-300}
shift || true
echo "==> building"
cargo build --locked -p ringway-backend -p ringway-proxy -p ringway-tests --bins
status=0
for mode in "" --not-durable; do
  echo "==> ringway-chaos --secs $secs $mode $*"
  target/debug/ringway-chaos --secs "$secs" $mode "$@" || status=1
done
exit $status
