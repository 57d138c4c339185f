#!/usr/bin/env bash
# The development TLS material of Envoy's HTTPS listener, made with Debian's openssl (no download):
# a local CA and a server certificate for localhost / 127.0.0.1 signed by it, laid out as Envoy's
# file-based SDS reads it (envoy/tls-sds.yaml, relative to Envoy's working directory).
#
#   scripts/dev-tls.sh DIR            create DIR/ca.pem (give it to clients: curl --cacert),
#                                     DIR/ca.key, DIR/tls.crt, DIR/tls.key, DIR/sds.yaml unless
#                                     they exist (idempotent: a second run changes nothing)
#   scripts/dev-tls.sh --renew DIR    a new key and certificate from the same CA, moved into
#                                     place while Envoy runs: it reloads them without a restart
#   scripts/dev-tls.sh --self-signed DIR HOST
#                                     a self-signed pair for HOST (tls.crt, tls.key only): the
#                                     minikube overlay's Secret (scripts/gen-secrets.sh)
#
# Used by scripts/run.sh (DIR = .data/tls), the e2e stack and scripts/gen-secrets.sh. Not for
# production: there the certificate comes from your CA or cert-manager (manifests/README.md).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"

die() { echo "dev-tls: $*" >&2; exit 64; }
mode=create
case "${1:-}" in
  --renew) mode=renew; shift ;;
  --self-signed) mode=self; shift ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac
dir=${1:?usage: scripts/dev-tls.sh [--renew | --self-signed] DIR [HOST]}
command -v openssl >/dev/null || die "openssl is required (apt-get install openssl)"
umask 077
mkdir -p "$dir"

# P-256 keys: small, fast, and what every TLS 1.2/1.3 client accepts.
newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
server_ext() {
  printf '%s\n' "subjectAltName=$1" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth"
}

# issue KEY CRT: a server certificate for localhost and 127.0.0.1, signed by the CA, 90 days.
issue() {
  local csr ext
  csr=$(mktemp) ext=$(mktemp)
  server_ext "DNS:localhost,IP:127.0.0.1,IP:::1" >"$ext"
  newkey "$1"
  openssl req -new -key "$1" -subj "/CN=localhost" -out "$csr" 2>/dev/null
  # A random serial per certificate: a rotation is visible as a new serial.
  openssl x509 -req -in "$csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days 90 -extfile "$ext" -out "$2" 2>/dev/null
  rm -f "$csr" "$ext"
}

case $mode in
  self)
    host=${2:?--self-signed needs a host name}
    newkey "$dir/tls.key"
    openssl req -x509 -new -key "$dir/tls.key" -subj "/CN=$host" -days 365 \
      -addext "subjectAltName=DNS:$host" -addext "extendedKeyUsage=serverAuth" \
      -out "$dir/tls.crt" 2>/dev/null
    ;;
  create)
    if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca.key" ]; then
      newkey "$dir/ca.key"
      openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=edge-auth development CA" -days 3650 \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$dir/ca.pem" 2>/dev/null
      rm -f "$dir/tls.crt" "$dir/tls.key"
    fi
    if [ ! -s "$dir/tls.crt" ] || [ ! -s "$dir/tls.key" ]; then issue "$dir/tls.key" "$dir/tls.crt"; fi
    cp "$here/envoy/tls-sds.yaml" "$dir/sds.yaml"
    chmod 0644 "$dir/ca.pem" "$dir/tls.crt" "$dir/sds.yaml"
    ;;
  renew)
    [ -s "$dir/ca.key" ] || die "$dir has no CA: run scripts/dev-tls.sh $dir first"
    issue "$dir/.next.key" "$dir/.next.crt"
    chmod 0644 "$dir/.next.crt"
    # Moves (not copies) so Envoy's watched_directory sees them; it checks the pair matches, so
    # the moment between the two moves only logs a mismatch and keeps the old certificate.
    mv "$dir/.next.key" "$dir/tls.key"
    mv "$dir/.next.crt" "$dir/tls.crt"
    ;;
esac
