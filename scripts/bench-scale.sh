#!/usr/bin/env bash
# Issue #15 §5 "Footprint" and §2 "1,000,000 outstanding entries", a step of `make bench`
# (scripts/bench.sh calls it with its results file and its release binaries). Alone:
#   cargo build --release -p ext-authz -p login-service -p bench
#   flock /tmp/edge-e2e.lock scripts/bench-scale.sh OUT.jsonl [--quick]
#
# Footprint: `bench footprint` starts ext-authz (no feed; pinned to one CPU as a sidecar, then
# unpinned) and login-service (SQLite) FOOTPRINT_RUNS times each: exec → ready (gRPC health
# SERVING, polled every ms; /readyz for login-service) and VmRSS after 2 s idle.
# Scale: SCALE_ENTRIES revocations are written straight into a fresh SQLite file
# (bench/scale_db.py: one INSERT … SELECT), login-service serves them (pinned to ENVOY_CPU), and
# `bench revocation-scale` starts two ext-authz replicas on OTHER_CPUS (exec → SERVING with the
# snapshot, RSS), logs out SCALE_LOGOUTS fresh tokens (204 → both replicas refuse), and runs
# `bench grpc` against a loaded replica and one on an empty feed in alternating rounds. Then
# the query plans of login-service's revocation queries at that size, on SQLite and (when the
# `mysql` client reaches 127.0.0.1:3306) on a fresh MariaDB database loaded the same way.
#
# Environment (all optional):
#   SKIP_FOOTPRINT=1 SKIP_SCALE=1 SKIP_SCALE_MYSQL=1
#   SCALE_ENTRIES=1000000 (--quick: 100000)  SCALE_LOGOUTS=200 (--quick: 50)
#   SCALE_CHECK_ROUNDS=5 (--quick: 1)  SCALE_CHECK_DURATION=5 (--quick: 2)  SCALE_CHECK_RATES=1000,max
#   FOOTPRINT_RUNS=5 (--quick: 3)
#   PORT_OFFSET=10000 (ports 9100-9115 + offset)  ENVOY_CPU=0 OTHER_CPUS=1  BIN=target/release
#   EXT_AUTHZ_ARGS="..."  extra ext-authz flags (every replica)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

OUT=${1:?usage: scripts/bench-scale.sh OUT.jsonl [--quick]}
quick=false
[ "${2:-}" = --quick ] && quick=true
BIN=${BIN:-$ROOT/target/release}
PORT_OFFSET=${PORT_OFFSET:-10000}
ENVOY_CPU=${ENVOY_CPU:-0}
OTHER_CPUS=${OTHER_CPUS:-$( (($(nproc) > 1)) && echo 1 || echo 0)}
if $quick; then
  : "${SCALE_ENTRIES:=100000}" "${SCALE_LOGOUTS:=50}" "${SCALE_CHECK_ROUNDS:=1}"
  : "${SCALE_CHECK_DURATION:=2}" "${FOOTPRINT_RUNS:=3}"
fi
SCALE_ENTRIES=${SCALE_ENTRIES:-1000000} SCALE_LOGOUTS=${SCALE_LOGOUTS:-200}
SCALE_CHECK_ROUNDS=${SCALE_CHECK_ROUNDS:-5} SCALE_CHECK_DURATION=${SCALE_CHECK_DURATION:-5}
SCALE_CHECK_RATES=${SCALE_CHECK_RATES:-1000,max} FOOTPRINT_RUNS=${FOOTPRINT_RUNS:-5}
EXT_AUTHZ_ARGS=${EXT_AUTHZ_ARGS:-}

log() { printf '\033[1mbench-scale:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1mbench-scale: error:\033[0m %s\n' "$*" >&2; exit 1; }
for bin in ext-authz login-service bench; do
  [ -x "$BIN/$bin" ] || die "$BIN/$bin is missing (cargo build --release -p $bin)"
done

P_FP_AUTHZ=$((9100 + PORT_OFFSET)) P_FP_METRICS=$((9101 + PORT_OFFSET)) P_FP_LOGIN=$((9102 + PORT_OFFSET))
P_LOADED=$((9103 + PORT_OFFSET)) P_EMPTY=$((9104 + PORT_OFFSET)) P_REPLICAS=$((9110 + PORT_OFFSET))
for port in "$P_FP_AUTHZ" "$P_FP_METRICS" "$P_FP_LOGIN" "$P_LOADED" "$P_EMPTY" \
  $(seq "$P_REPLICAS" $((P_REPLICAS + 5))); do
  port_busy "$port" && die "port $port is in use"
done

WORK=$(mktemp -d /tmp/edge-auth-bench-scale.XXXXXX)
mkdir -p "$WORK/keys" "$WORK/logs"
KID=bench
umask 077
head -c 36 /dev/urandom | base64 -w0 >"$WORK/keys/$KID"
umask 022
pids=() mysql_db=
cleanup() {
  local status=$?
  ((${#pids[@]})) && stop_pids 5 "${pids[@]}"
  [ -n "$mysql_db" ] && mysql -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS \`$mysql_db\`" 2>/dev/null
  if ((status == 0)); then rm -rf "$WORK"; else log "logs kept in $WORK/logs"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
export RUST_LOG=info
unset JWT_SECRET JWT_DEFAULT_KID JWT_SIGNING_KID DATABASE_URL

# login-service on SQLite in DIR, on PORT, pinned to CPUS; sets $last_pid.
migrate() { DATA_DIR=$1 "$BIN/login-service" migrate >>"$WORK/logs/login-admin.log" 2>&1; }
serve() { # serve NAME DIR PORT CPUS
  DATA_DIR=$2 taskset -c "$4" "$BIN/login-service" serve --http-addr "127.0.0.1:$3" \
    --keys-dir "$WORK/keys" >"$WORK/logs/$1.log" 2>&1 &
  last_pid=$!
  pids+=("$last_pid")
  local _
  for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$3/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$last_pid" 2>/dev/null || die "$1 exited; see $WORK/logs/$1.log"
    sleep 0.1
  done
  die "$1 not ready after 30 s"
}

if [ "${SKIP_FOOTPRINT:-0}" != 1 ]; then
  # shellcheck disable=SC2206 # EXT_AUTHZ_ARGS is a list of flags
  authz=("$BIN/ext-authz" --grpc-addr "127.0.0.1:$P_FP_AUTHZ" --metrics-addr "127.0.0.1:$P_FP_METRICS"
    --keys-dir "$WORK/keys" $EXT_AUTHZ_ARGS)
  log "footprint: ext-authz, pinned to CPU $OTHER_CPUS (current-thread runtime), $FOOTPRINT_RUNS starts"
  taskset -c "$ENVOY_CPU" "$BIN/bench" footprint --name ext-authz --runs "$FOOTPRINT_RUNS" \
    --grpc "127.0.0.1:$P_FP_AUTHZ" --log "$WORK/logs/footprint-ext-authz.log" \
    --label "pinned to 1 CPU (sidecar: current-thread runtime), no feed" -- \
    taskset -c "$OTHER_CPUS" "${authz[@]}" >>"$OUT"
  log "footprint: ext-authz, not pinned ($(nproc) workers)"
  taskset -c "$ENVOY_CPU" "$BIN/bench" footprint --name ext-authz --runs "$FOOTPRINT_RUNS" \
    --grpc "127.0.0.1:$P_FP_AUTHZ" --log "$WORK/logs/footprint-ext-authz-mt.log" \
    --label "not pinned ($(nproc) workers: multi-threaded runtime), no feed" -- "${authz[@]}" >>"$OUT"
  mkdir -p "$WORK/fp-login"
  migrate "$WORK/fp-login"
  log "footprint: login-service (SQLite), not pinned"
  DATA_DIR=$WORK/fp-login taskset -c "$ENVOY_CPU" "$BIN/bench" footprint --name login-service \
    --runs "$FOOTPRINT_RUNS" --http "http://127.0.0.1:$P_FP_LOGIN/readyz" \
    --log "$WORK/logs/footprint-login-service.log" \
    --label "SQLite, not pinned (HASH_CONCURRENCY = $(nproc) cores: $(nproc) × 19 MiB argon2 blocks)" -- \
    "$BIN/login-service" serve --http-addr "127.0.0.1:$P_FP_LOGIN" --keys-dir "$WORK/keys" >>"$OUT"
fi

if [ "${SKIP_SCALE:-0}" != 1 ]; then
  mkdir -p "$WORK/loaded" "$WORK/empty"
  migrate "$WORK/loaded"
  migrate "$WORK/empty"
  log "scale: $SCALE_ENTRIES revocations into SQLite"
  python3 bench/scale_db.py load-sqlite "$WORK/loaded/login.sqlite" "$SCALE_ENTRIES" >>"$OUT"
  python3 bench/scale_db.py explain-sqlite "$WORK/loaded/login.sqlite" >>"$OUT"
  serve scale-login-loaded "$WORK/loaded" "$P_LOADED" "$ENVOY_CPU"
  serve scale-login-empty "$WORK/empty" "$P_EMPTY" "$ENVOY_CPU"
  log "scale: two ext-authz replicas on the loaded feed, logouts, check vs an empty feed"
  taskset -c "$ENVOY_CPU" "$BIN/bench" revocation-scale --ext-authz "$BIN/ext-authz" \
    --keys-dir "$WORK/keys" --key "$WORK/keys/$KID" --kid "$KID" \
    --login-url "http://127.0.0.1:$P_LOADED" --feed-url "http://127.0.0.1:$P_LOADED/revocations" \
    --empty-feed-url "http://127.0.0.1:$P_EMPTY/revocations" --entries "$SCALE_ENTRIES" \
    --port "$P_REPLICAS" --cpus "$OTHER_CPUS" --client-cpus "$ENVOY_CPU" \
    --ext-authz-args "$EXT_AUTHZ_ARGS" --logouts "$SCALE_LOGOUTS" \
    --check-rounds "$SCALE_CHECK_ROUNDS" --check-rates "$SCALE_CHECK_RATES" \
    --check-duration "$SCALE_CHECK_DURATION" --log-dir "$WORK/logs" >>"$OUT"

  if [ "${SKIP_SCALE_MYSQL:-0}" != 1 ] && command -v mysql >/dev/null &&
    mysql -h 127.0.0.1 -u root -e 'SELECT 1' >/dev/null 2>&1; then
    mysql_db=bench_scale_$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
    log "scale: $SCALE_ENTRIES revocations into MariaDB ($mysql_db) for its query plans"
    mysql -h 127.0.0.1 -u root -e "CREATE DATABASE \`$mysql_db\`"
    DATABASE_URL="mysql://root@127.0.0.1:3306/$mysql_db" "$BIN/login-service" migrate \
      >>"$WORK/logs/login-admin.log" 2>&1
    python3 bench/scale_db.py load-mysql "$mysql_db" "$SCALE_ENTRIES" >>"$OUT"
    python3 bench/scale_db.py explain-mysql "$mysql_db" >>"$OUT"
  else
    log "scale: MariaDB not reachable at 127.0.0.1:3306 (or SKIP_SCALE_MYSQL=1): SQLite plans only"
  fi
fi
log "done"
