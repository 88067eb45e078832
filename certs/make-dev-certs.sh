#!/usr/bin/env bash
# A local development CA and a certificate for localhost / 127.0.0.1 signed
# by it, in certs/dev/ (the paths conf/ringway.toml names). Never commit the
# keys; *.pem is git-ignored. Trust certs/dev/ca.pem in a client to test wss://.
set -euo pipefail
cd "$(dirname "$0")"
command -v openssl >/dev/null 2>&1 || { echo "error: openssl not found: apt-get install -y openssl" >&2; exit 1; }
mkdir -p dev
cd dev
if [ -f cert.pem ] && [ "${1:-}" != "--force" ]; then
  echo "certs/dev/cert.pem exists; pass --force to make new ones"
  exit 0
fi
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
  -subj "/CN=Ringway dev CA" -keyout ca-key.pem -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -subj "/CN=localhost" -keyout key.pem -out cert.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 825 \
  -extfile ext.cnf -out cert.pem 2>/dev/null
rm -f cert.csr ext.cnf ca.srl
chmod 600 ca-key.pem key.pem
echo "wrote certs/dev/{ca.pem,ca-key.pem,cert.pem,key.pem}"
