#!/usr/bin/env bash
# A local development CA and a certificate for localhost, 127.0.0.1, ::1 and
# the demo names (*.localhost, ringway.test, *.ringway.test) signed
# by it, in certs/dev/ (or --out DIR). conf/ringway.toml names
# certs/dev/{cert,key}.pem relative to its own directory. Never commit the
# keys; *.pem is git-ignored. Trust ca.pem in a client to test wss://.
#
#   certs/make-dev-certs.sh [--force] [--out DIR]
set -euo pipefail
out="$(cd "$(dirname "$0")" && pwd)/dev"
force=false
while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=true ;;
    --out) out="$2"; shift ;;
    *) echo "usage: $0 [--force] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
command -v openssl >/dev/null 2>&1 || { echo "error: openssl not found: apt-get install -y openssl" >&2; exit 1; }
mkdir -p "$out"
cd "$out"
if [ -f cert.pem ] && ! $force; then
  echo "$out/cert.pem exists; pass --force to make new ones"
  exit 0
fi
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
  -subj "/CN=Ringway dev CA" -keyout ca-key.pem -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -subj "/CN=localhost" -keyout key.pem -out cert.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,DNS:*.localhost,DNS:ringway.test,DNS:*.ringway.test,IP:127.0.0.1,IP:::1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 825 \
  -extfile ext.cnf -out cert.pem 2>/dev/null
rm -f cert.csr ext.cnf ca.srl
chmod 600 ca-key.pem key.pem
echo "wrote $out/{ca.pem,ca-key.pem,cert.pem,key.pem} (names: localhost, *.localhost, ringway.test, *.ringway.test, 127.0.0.1, ::1)"
