#!/usr/bin/env bash
# Install Ringway as systemd services (run as root):
#   - ringway-proxy and ringway-backend into PREFIX/bin (/usr/local/bin),
#     built here with `cargo build --release --locked` unless --prebuilt;
#   - the units into /etc/systemd/system;
#   - /etc/ringway/ringway.toml and /etc/ringway/backend.env from conf/,
#     only where the file does not exist yet: an operator's file is never
#     overwritten;
#   - the `ringway` system user and group, if missing;
# then `systemctl daemon-reload` when systemd runs this machine.
#
# Usage: scripts/install.sh [--prebuilt DIR] [--prefix DIR] [--destdir DIR]
#   --prebuilt DIR  install DIR/ringway-proxy and DIR/ringway-backend, no build
#                   (e.g. target/release after building as yourself)
#   --prefix DIR    binaries go to DIR/bin, and the units point there
#                   (default /usr/local)
#   --destdir DIR   stage every file under DIR instead of / (also DESTDIR=DIR):
#                   no root needed; no user, no ownership, no daemon-reload
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

prebuilt=""
prefix=/usr/local
destdir=${DESTDIR:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --prebuilt) prebuilt=${2:?--prebuilt needs a directory}; shift 2 ;;
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see $0 --help)" ;;
  esac
done
case "$prefix" in /*) ;; *) die "--prefix must be an absolute path: $prefix" ;; esac
staging=false
if [ -n "$destdir" ]; then
  staging=true
  mkdir -p "$destdir"
  destdir=$(cd "$destdir" && pwd)
elif [ "$(id -u)" -ne 0 ]; then
  die "run as root (sudo $0 $*), or stage the files with --destdir DIR"
fi

bin_dir="$destdir$prefix/bin"
unit_dir="$destdir/etc/systemd/system"
conf_dir="$destdir/etc/ringway"

# 1. The binaries.
if [ -z "$prebuilt" ]; then
  command -v cargo >/dev/null 2>&1 ||
    die "cargo is not on this user's PATH. Build as yourself with
    cargo build --release --locked -p ringway-proxy -p ringway-backend
then run: sudo $0 --prebuilt target/release"
  ensure_build_packages
  echo "==> cargo build --release --locked (about 2.5 minutes from cold)"
  cargo build --release --locked -p ringway-proxy -p ringway-backend
  prebuilt=target/release
fi
for bin in ringway-proxy ringway-backend; do
  [ -x "$prebuilt/$bin" ] || die "$prebuilt/$bin is missing or not executable"
done
echo "==> binaries -> $bin_dir"
install -d -m 0755 "$bin_dir"
for bin in ringway-proxy ringway-backend; do
  install -m 0755 "$prebuilt/$bin" "$bin_dir/$bin"
done

# 2. The user the services run as: no home, no login shell.
useradd_args=(--system --gid ringway --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ringway)
if $staging; then
  echo "==> staging: the ringway user and group are not created; create them on the target:"
  echo "    groupadd --system ringway && useradd ${useradd_args[*]}"
elif getent passwd ringway >/dev/null; then
  echo "==> user ringway exists"
else
  echo "==> creating the system user and group ringway"
  getent group ringway >/dev/null || groupadd --system ringway
  useradd "${useradd_args[@]}"
fi

# 3. The units, pointed at PREFIX/bin.
echo "==> units -> $unit_dir"
install -d -m 0755 "$unit_dir"
for unit in ringway-proxy.service ringway-backend@.service; do
  sed "s#/usr/local/bin/#$prefix/bin/#g" "systemd/$unit" >"$unit_dir/$unit.tmp"
  chmod 0644 "$unit_dir/$unit.tmp"
  mv "$unit_dir/$unit.tmp" "$unit_dir/$unit"
done

# 4. The configs, only where absent. Readable by the services' group, not
# by everyone: they may hold an admin token, JWT_SECRET or a Redis password.
owner=()
$staging || owner=(-o root -g ringway)
install -d -m 0750 "${owner[@]}" "$conf_dir"
for pair in ringway.toml:conf/ringway.toml backend.env:conf/backend.env; do
  name=${pair%%:*}
  if [ -e "$conf_dir/$name" ]; then
    echo "==> kept the existing /etc/ringway/$name (the example is $PWD/${pair#*:})"
  else
    install -m 0640 "${owner[@]}" "${pair#*:}" "$conf_dir/$name"
    echo "==> installed /etc/ringway/$name from ${pair#*:}"
  fi
done

# The example's TLS listener names certs/dev/{cert,key}.pem next to the
# config: make a development certificate there so the example starts. Replace
# it with the site's certificate before serving real clients.
if [ ! -e "$conf_dir/certs/dev/cert.pem" ] && grep -q 'certs/dev/cert.pem' "$conf_dir/ringway.toml"; then
  if certs/make-dev-certs.sh --out "$conf_dir/certs/dev" >/dev/null; then
    $staging || chown -R root:ringway "$conf_dir/certs"
    chmod 0640 "$conf_dir/certs/dev/key.pem"
    echo "==> made a development certificate in /etc/ringway/certs/dev (replace it with the site's)"
  else
    echo "warning: could not make a development certificate (openssl missing?)" >&2
  fi
fi

echo "==> checking /etc/ringway/ringway.toml"
if ! "$bin_dir/ringway-proxy" --config "$conf_dir/ringway.toml" --check; then
  echo "warning: the proxy will not start with this file until the errors above are fixed" >&2
fi

# 5. Tell systemd.
if $staging; then
  echo "==> staged under $destdir; run 'systemctl daemon-reload' on the machine these files go to"
elif [ -d /run/systemd/system ]; then
  echo "==> systemctl daemon-reload"
  systemctl daemon-reload
else
  echo "==> systemd is not running this machine (not PID 1): the units take effect"
  echo "    after 'systemctl daemon-reload' on a machine booted with systemd"
fi

cat <<EOF

Next steps:
  1. Edit /etc/ringway/ringway.toml: the [[listener]] addresses and the servers
     of each [upstream.NAME]. Check it as the service will read it:
       sudo -u ringway $prefix/bin/ringway-proxy --config /etc/ringway/ringway.toml --check
  2. Edit /etc/ringway/backend.env (REDIS_URL, JWT_SECRET) for the backend nodes.
  3. Start and enable (one backend node per port):
       systemctl enable --now ringway-backend@9001 ringway-backend@9002 ringway-proxy
  4. Watch: systemctl status ringway-proxy; journalctl -u ringway-proxy -f
  docs/OPERATIONS.md goes on from here: reload, drain, binary upgrade.
EOF
