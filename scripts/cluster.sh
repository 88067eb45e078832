#!/usr/bin/env bash
# A working local cluster: ringway-proxy in front of three ringway-backend
# nodes, over HTTP and HTTPS (a local development CA's certificate, made by
# certs/make-dev-certs.sh when missing). With redis-server installed, a private one (its own port and
# directory, nothing saved) backs the nodes as in production; without it,
# the three nodes run in one process and share an in-process broker.
# Runs in the foreground; Ctrl-C stops everything it started.
#
# Ctrl-C (SIGINT) exits 130 and SIGTERM 143, once every process it started
# has stopped.
#
# Ports (override with the environment): RINGWAY_HTTP_PORT (8080),
# RINGWAY_HTTPS_PORT (8443), RINGWAY_ADMIN_PORT (9090), RINGWAY_BACKEND_PORT (9001, 9002, 9003),
# RINGWAY_REDIS_PORT (6390). RINGWAY_PROFILE=release builds optimised;
# RINGWAY_BIN_DIR=DIR uses the binaries in DIR instead of building;
# RINGWAY_RUN_DIR=DIR puts logs, config and pid files there
# (default target/dev-cluster); RINGWAY_CERT_DIR=DIR takes the HTTPS
# certificate (ca.pem, cert.pem, key.pem) from DIR, making them there when
# missing (default certs/dev).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

http_port=${RINGWAY_HTTP_PORT:-8080}
https_port=${RINGWAY_HTTPS_PORT:-8443}
admin_port=${RINGWAY_ADMIN_PORT:-9090}
backend_port=${RINGWAY_BACKEND_PORT:-9001}
redis_port=${RINGWAY_REDIS_PORT:-6390}
profile=${RINGWAY_PROFILE:-dev}
run_dir=${RINGWAY_RUN_DIR:-target/dev-cluster}
cert_dir=${RINGWAY_CERT_DIR:-certs/dev}

ensure_build_packages

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports=("$http_port" "$https_port" "$admin_port" "$backend_port" $((backend_port + 1)) $((backend_port + 2)))
have redis-server && ports+=("$redis_port")
for p in "${ports[@]}"; do
  port_in_use "$p" && die "port $p is already in use on 127.0.0.1; stop what uses it or set RINGWAY_*_PORT (see the top of $0)"
done

if [ -n "${RINGWAY_BIN_DIR:-}" ]; then
  bin_dir=$RINGWAY_BIN_DIR
else
  echo "==> building ringway-proxy and ringway-backend ($profile)"
  cargo build --profile "$profile" --locked --workspace --bins
  bin_dir=target/$([ "$profile" = dev ] && echo debug || echo "$profile")
fi

# The HTTPS listener's certificate: a local CA and a certificate for
# localhost and 127.0.0.1 signed by it, made once and kept.
if [ ! -f "$cert_dir/ca.pem" ] || [ ! -f "$cert_dir/cert.pem" ] || [ ! -f "$cert_dir/key.pem" ]; then
  ensure_packages openssl:openssl
  echo "==> making a development CA and certificate in $cert_dir"
  certs/make-dev-certs.sh --force --out "$cert_dir"
fi
cert_dir=$(cd "$cert_dir" && pwd)

rm -rf "$run_dir"
mkdir -p "$run_dir/redis"
pids=()
# started PID: remember a process this script must stop (also in $run_dir/pids).
started() {
  pids+=("$1")
  echo "$1" >>"$run_dir/pids"
}
# stop: SIGTERM to every process started here, SIGKILL to any still
# running 10 s later, and wait for all of them. Never fails.
stop() {
  trap - INT TERM EXIT
  set +e
  echo
  echo "==> stopping"
  local pid left i
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for i in $(seq 1 100); do
    left=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    [ $left -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
  wait 2>/dev/null
  return 0
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap 'status=$?; stop; exit $status' EXIT

# wait_for PORT NAME LOG: until 127.0.0.1:PORT accepts, or fail showing LOG.
wait_for() {
  for _ in $(seq 1 200); do
    port_in_use "$1" && return 0
    sleep 0.05
  done
  tail -n 20 "$3" >&2 || true
  die "$2 did not start on port $1 (log: $3)"
}

# start_node I: node I (1..3) in the background, its pid in $run_dir/node-I.pid.
start_node() {
  PORT=$((backend_port + $1 - 1)) WORKER_ID=node-$1 NODE_ID=$(hostname) \
    REDIS_URL=redis://127.0.0.1:$redis_port WS_HEARTBEAT_INTERVAL=5 \
    "$bin_dir/ringway-backend" >>"$run_dir/node-$1.log" 2>&1 &
  echo $! >"$run_dir/node-$1.pid"
  started $!
}

essential=() # if one of these exits, the cluster stops
if have redis-server; then
  mode="Redis (private redis-server on 127.0.0.1:$redis_port)"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$run_dir/redis" >"$run_dir/redis.log" 2>&1 &
  started $!
  essential+=($!)
  wait_for "$redis_port" redis-server "$run_dir/redis.log"
  for i in 1 2 3; do start_node "$i"; done
else
  mode="in-process broker (redis-server is not installed: one process runs the three nodes)"
  PORT=$backend_port WORKER_ID=node NODE_ID=$(hostname) \
    "$bin_dir/ringway-backend" --nodes 3 >"$run_dir/nodes.log" 2>&1 &
  started $!
  essential+=($!)
fi
for i in 0 1 2; do
  wait_for $((backend_port + i)) "backend node $((i + 1))" "$run_dir"/node*.log
done

cat >"$run_dir/ringway.toml" <<TOML
# Written by scripts/cluster.sh.
[server]
threads = 2
grace_period = "5s"

[admin]
listen = "127.0.0.1:$admin_port"

[[listener]]
listen = "127.0.0.1:$http_port"

[[listener]]
listen = "127.0.0.1:$https_port"
tls = { cert = "$cert_dir/cert.pem", key = "$cert_dir/key.pem" }

[[route]]
host = "*"
path_prefix = "/"
upstream = "chat"

[upstream.chat]
balance = "consistent-hash"
hash_key = ["cookie:sid", "query:sid", "header:x-session-id", "client-ip"]
balance_factor = 1.25
servers = [
  { addr = "127.0.0.1:$backend_port" },
  { addr = "127.0.0.1:$((backend_port + 1))" },
  { addr = "127.0.0.1:$((backend_port + 2))" },
]
[upstream.chat.health_check]
kind = "http"
path = "/health"
interval = "2s"
timeout = "1s"
rise = 2
fall = 3
TOML
"$bin_dir/ringway-proxy" --config "$run_dir/ringway.toml" --check >/dev/null
"$bin_dir/ringway-proxy" --config "$run_dir/ringway.toml" >"$run_dir/proxy.log" 2>&1 &
started $!
essential+=($!)
wait_for "$admin_port" ringway-proxy "$run_dir/proxy.log"
wait_for "$http_port" ringway-proxy "$run_dir/proxy.log"
wait_for "$https_port" ringway-proxy "$run_dir/proxy.log"

cat <<TXT

Ringway is up: ringway-proxy on :$http_port (HTTP) and :$https_port (HTTPS) in front of 3 backend
nodes, sharing state through $mode.

  Chat in a browser    http://127.0.0.1:$http_port/        (open two tabs; sessions stick to a node)
  WebSocket            ws://127.0.0.1:$http_port/ws?sid=demo-1&user=alice   (protocol: docs/PROTOCOL.md)
  HTTPS and WSS        https://localhost:$https_port/   wss://localhost:$https_port/ws   (trust $cert_dir/ca.pem)
  Try HTTPS            curl --cacert $(printf %q "$cert_dir/ca.pem") https://localhost:$https_port/health
  Proxy stats          http://127.0.0.1:$admin_port/stats.json
  Node health          http://127.0.0.1:$backend_port/health   (and :$((backend_port + 1)), :$((backend_port + 2)))
  Cluster stats        http://127.0.0.1:$backend_port/api/websocket/stats
  Metrics              http://127.0.0.1:$backend_port/metrics
  Logs and config      $run_dir/

TXT
if have redis-server; then
  cat <<TXT
Kill a node (kill -9 \$(cat $run_dir/node-1.pid)): its clients reconnect through the proxy to a
survivor, which resumes their sessions; the node is restarted 10 s later, as systemd would, and
its keys come back to it. Ctrl-C stops everything.
TXT
else
  echo "Ctrl-C stops everything. (Install redis-server to run the nodes as separate processes.)"
fi

# Supervise: restart a node that died; stop when Redis or the proxy does.
# (Sleeping in the background lets a signal's trap run at once.)
declare -A dead_since=()
while sleep 1 & wait $!; do
  for pid in "${essential[@]}"; do
    kill -0 "$pid" 2>/dev/null || die "a process the cluster needs exited; see $run_dir/*.log"
  done
  have redis-server || continue
  for i in 1 2 3; do
    kill -0 "$(cat "$run_dir/node-$i.pid")" 2>/dev/null && continue
    if [ -z "${dead_since[$i]:-}" ]; then
      dead_since[$i]=$SECONDS
      echo "node-$i exited; restarting it in 10 s"
    elif [ $((SECONDS - dead_since[$i])) -ge 10 ]; then
      unset "dead_since[$i]"
      start_node "$i"
      echo "node-$i restarted"
    fi
  done
done
