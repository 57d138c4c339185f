#!/usr/bin/env bash
# `make bench-shipped` (issue #15 §4): what each part of the shipped Envoy config costs. Runs the
# lean configuration (c) (Envoy → ext-authz over TCP), the shipped config (e), and (c) plus ONE
# part of the shipped config at a time (`envoy/render.py --bench --shipped-diffs`: c+access_log,
# c+routes, c+header_hygiene, ... one per EDGE_FLAGS entry), all at once, each on its own port,
# every Envoy pinned to one CPU; then measures them in interleaved rounds exactly like
# scripts/bench.sh's Envoy section (wrk, `bench measure`: Envoy CPU time ÷ requests).
# Prints a table and writes JSON lines (config `shipped:NAME`) to OUT (default
# bench/results/shipped.jsonl), which bench/report.py renders as "The shipped config's cost".
# Run it under `flock /tmp/edge-e2e.lock`: it starts servers.
#
#   scripts/bench-shipped.sh [--no-build] [--quick]
#   ROUNDS=3 DURATION=8 WARMUP=2 CONNS=64   rounds; seconds per measurement / warm-up
#   PORT_OFFSET=30000   every port = the shipped one + offset (a bench.sh run at +10000 and
#                       bench-cache.sh at +20000 can stay up)
#   ENVOY_CPU=0 OTHER_CPUS=1   Envoy alone on ENVOY_CPU; wrk, ext-authz, demo-upstream elsewhere
#   OUT=FILE            where the JSON lines go (appended)
#   BIN_DIR=DIR         ext-authz, demo-upstream and bench from DIR (default target/release;
#                       Envoy's CPU per request is what is measured, not theirs)
#   EXTRA=DIR           also measure every DIR/c+NAME.yaml: a candidate change, rendered from
#                       c+FLAG (its own listener and admin ports; working dir has tls/)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

bench_options bench-shipped 2,22 "$@"
if $quick; then : "${ROUNDS:=1}" "${DURATION:=3}" "${WARMUP:=1}"; fi
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-8} WARMUP=${WARMUP:-2} CONNS=${CONNS:-64}
OFF=${PORT_OFFSET:-30000}
NCPU=$(nproc)
others=$((NCPU > 1 ? 1 : 0))
((NCPU > 2)) && others=1-$((NCPU - 1))
ENVOY_CPU=${ENVOY_CPU:-0} OTHER_CPUS=${OTHER_CPUS:-$others}
OUT=${OUT:-$ROOT/bench/results/shipped.jsonl}
log() { printf '\033[1mbench-shipped:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1mbench-shipped: error:\033[0m %s\n' "$*" >&2; exit 1; }

scripts/bootstrap.sh --bench
for tool in wrk taskset curl python3; do command -v "$tool" >/dev/null || die "$tool is required"; done
ENVOY=$(command -v envoy || echo "$ROOT/.venv/bin/envoy")
if $build; then
  log "building release binaries (ext-authz, demo-upstream, bench)"
  cargo build --release --locked -p ext-authz -p demo-upstream -p bench 2>&1 | tail -1 >&2
fi
BIN=${BIN_DIR:-$ROOT/target/release}

WORK=$(mktemp -d /tmp/edge-bench-shipped.XXXXXX)
pids=() names=()
trap cleanup_work EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
wait_up() { # wait_up NAME PID CHECK... (lib.sh wait_ready)
  wait_ready "$1" "$2" 30 "${@:3}" || die "see $WORK/logs/$1.log"
}

mkdir -p "$WORK/keys" "$WORK/logs"
(umask 077 && head -c 36 /dev/urandom | base64 -w0 >"$WORK/keys/bench")
TOKEN=$("$BIN/bench" mint --key "$WORK/keys/bench" --kid bench --alg hs256) # role admin
P_UP=$((8000 + OFF)) P_UP_ADMIN=$((8001 + OFF)) P_AUTHZ=$((9001 + OFF)) P_METRICS=$((9002 + OFF))
for port in "$P_UP" "$P_UP_ADMIN" "$P_AUTHZ" "$P_METRICS"; do
  port_busy "$port" && die "port $port is in use (another bench run?)"
done
export RUST_LOG=warn
start demo-upstream "$OTHER_CPUS" "$BIN/demo-upstream" --addr "127.0.0.1:$P_UP" --admin-addr "127.0.0.1:$P_UP_ADMIN"
UP_PID=$last_pid
start ext-authz "$OTHER_CPUS" "$BIN/ext-authz" --grpc-addr "127.0.0.1:$P_AUTHZ" \
  --metrics-addr "127.0.0.1:$P_METRICS" --keys-dir "$WORK/keys"
AUTHZ_PID=$last_pid
wait_up demo-upstream "$UP_PID" port_busy "$P_UP"
wait_up ext-authz "$AUTHZ_PID" port_busy "$P_AUTHZ"

python3 envoy/render.py --bench "$WORK/envoy" --secret-file "$WORK/keys/bench" --kid bench \
  --uds "$WORK/unused.sock" --port-offset "$OFF" --shipped-diffs
"$ROOT/scripts/dev-tls.sh" "$WORK/envoy/tls" >/dev/null || die "scripts/dev-tls.sh failed"
if [ -n "${EXTRA:-}" ]; then cp "$EXTRA"/c+*.yaml "$WORK/envoy/"; fi
# (c), the shipped (e), and c+FLAG in render.py's order; ports from the rendered files.
CONFIGS=(c-ext_authz_tcp e-shipped)
for f in "$WORK"/envoy/c+*.yaml; do CONFIGS+=("$(basename "$f" .yaml)"); done
declare -A PORT ADMIN ENVOY_PID
for cfg in "${CONFIGS[@]}"; do
  # The ingress listener's port is the first port_value after `name: ingress`; admin's the first.
  ADMIN[$cfg]=$(grep -m1 -o 'port_value: [0-9]*' "$WORK/envoy/$cfg.yaml" | cut -d' ' -f2)
  # One process, no pipe: `sed | grep -m1` died of SIGPIPE under pipefail when grep quit early.
  PORT[$cfg]=$(awk '/- name: ingress/ { f = 1 } f && match($0, /port_value: [0-9]+/) {
    print substr($0, RSTART + 12, RLENGTH - 12); exit }' "$WORK/envoy/$cfg.yaml")
done
start_envoys "$ENVOY_CPU" "${CONFIGS[@]}" || die "Envoy did not start; see $WORK/logs"
for cfg in "${CONFIGS[@]}"; do
  url="http://127.0.0.1:${PORT[$cfg]}/api/items"
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$url")
  [ "$code" = 200 ] || die "$cfg: GET with the token answered $code, expected 200"
  code=$(curl -s -o /dev/null -w '%{http_code}' "$url")
  [ "$code" = 401 ] || die "$cfg: GET without a token answered $code, expected 401"
done
log "${#CONFIGS[@]} Envoy configurations answer (200 with the token, 401 without)"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
RAW=$WORK/shipped.jsonl
: >"$RAW"
for cfg in "${CONFIGS[@]}"; do
  WRK_LABEL=warmup taskset -c "$OTHER_CPUS" wrk -t1 -c"$CONNS" -d"${WARMUP}s" -s bench/wrk/report.lua \
    -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:${PORT[$cfg]}/api/items" >/dev/null
done
for round in $(seq 1 "$ROUNDS"); do
  for k in "${!CONFIGS[@]}"; do # rotating order, as in scripts/bench.sh
    cfg=${CONFIGS[$(((k + round - 1) % ${#CONFIGS[@]}))]}
    log "round $round/$ROUNDS: $cfg (${DURATION}s)"
    WRK_LABEL=$cfg "$BIN/bench" measure --config "shipped:$cfg" --round "$round" \
      --busy "envoy_core=$ENVOY_CPU" --cpu "envoy=${ENVOY_PID[$cfg]}" --cpu "authz=$AUTHZ_PID" \
      --cpu "upstream=$UP_PID" -- \
      taskset -c "$OTHER_CPUS" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency --timeout 5s \
      -s bench/wrk/report.lua -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:${PORT[$cfg]}/api/items" >>"$RAW"
  done
done
echo "{\"kind\":\"shipped_env\",\"loadavg_at_start\":\"$LOAD_START\",\"loadavg_at_end\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"rounds\":$ROUNDS,\"duration_s\":$DURATION}" >>"$RAW"
mkdir -p "$(dirname "$OUT")"
cat "$RAW" >>"$OUT"
python3 bench/report.py --shipped "$RAW"
log "appended to $OUT"
