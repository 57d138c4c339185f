#!/usr/bin/env bash
# Creates the git-ignored secret files the kustomize overlays' secretGenerators read, so no real
# secret is ever committed. Idempotent: existing files are kept unless --force.
#
#   scripts/gen-secrets.sh                    minikube overlay (MySQL passwords, DATABASE_URL, JWT key)
#   DATABASE_URL=mysql://... scripts/gen-secrets.sh production
#                                             production overlay (managed MySQL: URL from the env).
#                                             Run again with another DATABASE_URL to replace the
#                                             URL alone (keys and feed token are kept); without
#                                             DATABASE_URL an existing URL is kept. Other overlays
#                                             ignore DATABASE_URL (in-cluster MariaDB).
#   scripts/gen-secrets.sh --add-key KID [OVERLAY]
#                                             key rotation: append a new random key named KID
#   scripts/gen-secrets.sh --remove-key KID [OVERLAY]
#                                             key rotation: drop a retired key
#   scripts/gen-secrets.sh minikube-eddsa     EdDSA minikube overlay: as minikube, but the Ed25519
#                                             pair of kid ed-1 instead of jwt-keys.env (an overlay
#                                             using components/eddsa gets no HMAC key)
#   scripts/gen-secrets.sh --eddsa KID [OVERLAY]
#                                             EdDSA (recommended): a new Ed25519 key pair named KID
#                                             (openssl genpkey -algorithm ed25519), the private half
#                                             for login-service, the public half for the gateway
#   --manifests DIR   the manifests/ tree to write into (default: this repo's); tests use a copy
#   --force           regenerate everything (new passwords: wipes nothing in the cluster, so only
#                     for a fresh cluster)
#
# Files, under manifests/overlays/<overlay>/secrets/ (mode 600, directory 700):
#   jwt-keys.env          KID=KEY lines; the Secret `jwt-keys` is mounted as KEYS_DIR, one file
#                         per kid. KEY = 64 hex characters (the 64 ASCII bytes are the HMAC key).
#   database-url          DATABASE_URL for login-service and the migrate Job
#   revocation-feed-token REVOCATION_FEED_TOKEN shared by login-service (required: it listens on
#                         0.0.0.0) and ext-authz (sent as Bearer to GET /revocations)
#   mysql-password        MariaDB password of auth_user            (minikube only)
#   mysql-root-password   MariaDB root password                    (minikube only)
#   tls.crt, tls.key      Envoy's HTTPS certificate, self-signed   (minikube only)
#   jwt-signing-key/KID.pem      (--eddsa) PKCS#8 Ed25519 private key: login-service ONLY
#   jwt-public-keys/KID.pub.pem  (--eddsa) its public key: the gateway mounts only these files
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
manifests="$here/manifests"
force=false add_key="" remove_key="" eddsa_kid=""
overlays=()
# The kid the overlays' ConfigMaps name as JWT_SIGNING_KID before any rotation.
INITIAL_KID=key-1
# The kid of the first Ed25519 pair of an EdDSA overlay (overlays/minikube-eddsa names it).
INITIAL_EDDSA_KID=ed-1
NAMESPACE=edge-auth

die() { echo "gen-secrets: $*" >&2; exit 64; }
while (($#)); do
  case "$1" in
    --manifests) manifests="$(cd "${2:?--manifests needs a directory}" && pwd)"; shift 2 ;;
    --force) force=true; shift ;;
    --add-key) add_key="${2:?--add-key needs a kid}"; shift 2 ;;
    --remove-key) remove_key="${2:?--remove-key needs a kid}"; shift 2 ;;
    --eddsa) eddsa_kid="${2:?--eddsa needs a kid}"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) overlays+=("$1"); shift ;;
  esac
done
((${#overlays[@]})) || overlays=(minikube)

umask 077
# 32 random bytes as 64 lowercase hex characters: URL-safe, no quoting needed anywhere.
random_hex() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
valid_kid() { [[ "$1" =~ ^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$ ]]; }

# write FILE CONTENT: creates FILE (no trailing newline) unless it exists and --force is off.
write() {
  if [[ -e "$1" ]] && ! $force; then
    echo "gen-secrets: keeping ${1#"$manifests"/}" >&2
    return
  fi
  printf '%s' "$2" >"$1"
  chmod 600 "$1"
  echo "gen-secrets: wrote ${1#"$manifests"/}" >&2
}

# The production overlay's database-url. An explicit DATABASE_URL replaces this one file only
# (the JWT keys and the feed token stay: --force would re-key every replica and invalidate every
# token); without one an existing file is kept and we say how to change it. The value holds a
# password: it is never printed. One line, mysql:// (a managed MySQL), no whitespace: a pasted
# trailing newline would otherwise end up in the Secret and in login-service's URL.
set_database_url() {
  local file="$1" shown="${1#"$manifests"/overlays/}"
  if [[ -z "${DATABASE_URL:-}" ]]; then
    if [[ ! -e "$file" ]] || $force; then
      die "production uses a managed database: set DATABASE_URL=mysql://USER:PASSWORD@HOST:3306/auth"
    fi
    echo "gen-secrets: keeping $shown (to change it: DATABASE_URL=mysql://... $0 production)" >&2
    return
  fi
  [[ "$DATABASE_URL" =~ ^mysql://[^[:space:][:cntrl:]]+$ ]] \
    || die "DATABASE_URL must be one mysql://USER:PASSWORD@HOST:3306/DB URL without whitespace (value not shown)"
  if [[ -e "$file" ]] && [[ "$(cat "$file")" == "$DATABASE_URL" ]]; then
    echo "gen-secrets: keeping $shown (same DATABASE_URL)" >&2
    return
  fi
  local existed=false
  [[ -e "$file" ]] && existed=true
  printf '%s' "$DATABASE_URL" >"$file.tmp" && chmod 600 "$file.tmp" && mv "$file.tmp" "$file"
  if $existed; then
    echo "gen-secrets: replaced $shown from DATABASE_URL (nothing else changed; the new Secret" \
      "rolls login-service, and the migrate Job must be deleted before the next apply)" >&2
  else
    echo "gen-secrets: wrote $shown" >&2
  fi
}

# eddsa_pair KID: an Ed25519 pair in $secrets (set per overlay below), kept when it exists.
eddsa_pair() {
  local kid=$1 private_dir="$secrets/jwt-signing-key" public_dir="$secrets/jwt-public-keys"
  valid_kid "$kid" || die "invalid kid '$kid' (A-Z a-z 0-9 . _ -, max 64, no leading '.')"
  command -v openssl >/dev/null || die "openssl is needed for EdDSA keys (scripts/bootstrap.sh installs it)"
  mkdir -p "$private_dir" "$public_dir"
  chmod 700 "$private_dir" "$public_dir"
  local private="$private_dir/$kid.pem" public="$public_dir/$kid.pub.pem"
  if [[ -e "$private" ]] && ! $force; then
    echo "gen-secrets: keeping ${private#"$manifests"/}" >&2
  else
    openssl genpkey -algorithm ed25519 -out "$private.tmp" && mv "$private.tmp" "$private"
    chmod 600 "$private"
    echo "gen-secrets: wrote ${private#"$manifests"/}" >&2
  fi
  openssl pkey -in "$private" -pubout -out "$public.tmp" && mv "$public.tmp" "$public"
  chmod 600 "$public"
  echo "gen-secrets: wrote ${public#"$manifests"/}" >&2
}

for overlay in "${overlays[@]}"; do
  dir="$manifests/overlays/$overlay"
  [[ -f "$dir/kustomization.yaml" ]] || die "no overlay $dir"
  secrets="$dir/secrets"
  mkdir -p "$secrets"
  chmod 700 "$secrets"
  keys="$secrets/jwt-keys.env"

  if [[ -n "$add_key" ]]; then
    valid_kid "$add_key" || die "invalid kid '$add_key' (A-Z a-z 0-9 . _ -, max 64, no leading '.')"
    [[ -f "$keys" ]] || die "$keys does not exist: run without --add-key first"
    grep -q "^${add_key}=" "$keys" && die "kid $add_key already exists in $keys"
    printf '%s=%s\n' "$add_key" "$(random_hex)" >>"$keys"
    echo "gen-secrets: added key $add_key to ${keys#"$manifests"/}" >&2
    continue
  fi
  if [[ -n "$eddsa_kid" ]]; then
    eddsa_pair "$eddsa_kid"
    continue
  fi
  if [[ -n "$remove_key" ]]; then
    [[ -f "$keys" ]] || die "$keys does not exist"
    grep -q "^${remove_key}=" "$keys" || die "kid $remove_key not in $keys"
    [[ $(grep -c '=' "$keys") -gt 1 ]] || die "refusing to remove the last key"
    grep -v "^${remove_key}=" "$keys" >"$keys.tmp" && mv "$keys.tmp" "$keys"
    echo "gen-secrets: removed key $remove_key from ${keys#"$manifests"/}" >&2
    continue
  fi

  # An EdDSA overlay (it uses components/eddsa) has no HMAC key at all: the initial Ed25519 pair
  # instead of jwt-keys.env.
  if grep -q 'components/eddsa' "$dir/kustomization.yaml"; then
    eddsa_pair "$INITIAL_EDDSA_KID"
  else
    write "$keys" "$(printf '%s=%s\n' "$INITIAL_KID" "$(random_hex)")
"
  fi
  write "$secrets/revocation-feed-token" "$(random_hex)"
  case "$overlay" in
    production)
      set_database_url "$secrets/database-url"
      ;;
    *)
      [[ -z "${DATABASE_URL:-}" ]] || echo "gen-secrets: DATABASE_URL from the environment is not used for $overlay:" \
        "its database-url points at the in-cluster MariaDB (mysql-password)" >&2
      if [[ -e "$secrets/mysql-password" ]] && ! $force; then
        password="$(cat "$secrets/mysql-password")"
      else
        password="$(random_hex)"
      fi
      write "$secrets/mysql-password" "$password"
      write "$secrets/mysql-root-password" "$(random_hex)"
      # Must match the MySQL component: headless Service `mysql`, database `auth`, user auth_user.
      write "$secrets/database-url" \
        "mysql://auth_user:${password}@mysql.${NAMESPACE}.svc.cluster.local:3306/auth"
      # Envoy's HTTPS certificate: self-signed for the minikube host name (clients: -k, or trust
      # tls.crt). Production gets its own or cert-manager's (manifests/README.md "TLS").
      if [[ ! -s "$secrets/tls.crt" || ! -s "$secrets/tls.key" ]] || $force; then
        "$here/scripts/dev-tls.sh" --self-signed "$secrets" "gateway.${NAMESPACE}.local"
        echo "gen-secrets: wrote ${secrets#"$manifests"/}/tls.crt, tls.key (self-signed)" >&2
      else
        echo "gen-secrets: keeping ${secrets#"$manifests"/}/tls.crt, tls.key" >&2
      fi
      ;;
  esac
done
