#!/usr/bin/env bash
# `make bench`: Envoy's native jwt_authn side by side with ext-authz, the CPU cost of a check,
# direct gRPC latency, /login against the argon2 ceiling, and the criterion micro-benchmarks —
# one run, one machine. Writes bench/results/latest.{jsonl,md} and splices the tables into
# BENCHMARKS.md between the `bench:begin`/`bench:end` markers.
#
#   scripts/bench.sh                 full run (~6 min on 2 cores after the build): builds, measures,
#                                    reports
#   scripts/bench.sh --quick         smoke run (1 round, short steps; tables marked as such)
#   scripts/bench.sh --no-build      use the existing target/release binaries
#   scripts/bench.sh --no-splice     do not touch BENCHMARKS.md
#
# Environment (all optional):
#   ROUNDS=3 DURATION=12 WARMUP=3    Envoy rounds; seconds per measurement / warm-up
#   CONNS=64                         wrk connections for the Envoy configurations
#   GRPC_RATES=1000,5000,10000,max GRPC_DURATION=10 GRPC_CONNS=4
#   GRPC_MT_RATES=5000,max         steps for the unpinned (multi-threaded runtime) ext-authz
#   LOGIN_CONNS=100 LOGIN_DURATION=15
#   REFRESH_SESSIONS=4 REFRESH_DURATION=10   closed-loop POST /token chains (issue #17)
#   PORT_OFFSET=10000                every port = the shipped one + offset (see envoy/render.py)
#   ENVOY_CPU=0 OTHER_CPUS=1         CPU pinning (taskset): Envoy alone on ENVOY_CPU, wrk, ext-authz
#                                    and the upstream on OTHER_CPUS (gRPC step: load generator on
#                                    ENVOY_CPU, ext-authz on OTHER_CPUS)
#   EXT_AUTHZ_ARGS="..."             extra ext-authz flags (e.g. --worker-threads 2)
#   SKIP_CRITERION=1                 skip `cargo bench -p ext-authz`
#   SKIP_CACHE=1                     skip the token-cache step (scripts/bench-cache.sh --stack)
#   SKIP_FEED=1                      skip the feed-followers step (scripts/bench-feed.sh: MariaDB,
#                                    1 and 500 long polls; FEED_* knobs there)
#   SHIPPED_DIFFS=1                  also the shipped config's cost one part at a time
#                                    (scripts/bench-shipped.sh, ~5 min more: off by default)
#   SKIP_LOGIN_OVERLOAD=1            skip the login-overload step (issue #15 §3)
#   LOGIN_OVERLOAD_CALIBRATE=10 LOGIN_OVERLOAD_DURATION=20   its sustainable-rate and 2× phases (s)
#   SKIP_FOOTPRINT=1 SKIP_SCALE=1    skip idle RSS / exec → SERVING, or the 1M-revocation step
#   SCALE_ENTRIES=1000000            revocations loaded for it (--quick: 100000); SCALE_LOGOUTS=200
#   SKIP_FLOOR=1                     direct gRPC step without its health-Check floor (issue #15 §1)
#
# Everything listens on 127.0.0.1 only; every step is bounded in time; every process started here
# is stopped on exit (by pid).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

quick=false build=true splice=true
for arg in "$@"; do
  case "$arg" in
    --quick) quick=true ;;
    --no-build) build=false ;;
    --no-splice) splice=false ;;
    -h | --help) sed -n '2,38p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown option $arg (try --help)" >&2; exit 64 ;;
  esac
done

if $quick; then
  : "${ROUNDS:=1}" "${DURATION:=4}" "${WARMUP:=1}" "${GRPC_DURATION:=3}" "${LOGIN_DURATION:=5}"
fi
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-12} WARMUP=${WARMUP:-3} CONNS=${CONNS:-64}
GRPC_RATES=${GRPC_RATES:-1000,5000,10000,max} GRPC_DURATION=${GRPC_DURATION:-10}
GRPC_CONNS=${GRPC_CONNS:-4}
LOGIN_CONNS=${LOGIN_CONNS:-100} LOGIN_DURATION=${LOGIN_DURATION:-15}
REFRESH_SESSIONS=${REFRESH_SESSIONS:-4} REFRESH_DURATION=${REFRESH_DURATION:-$($quick && echo 3 || echo 10)}
PORT_OFFSET=${PORT_OFFSET:-10000}
NCPU=$(nproc)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if ((NCPU >= 2)); then
  others=1
  ((NCPU > 2)) && others=1-$((NCPU - 1))
  ENVOY_CPU=${ENVOY_CPU:-0} OTHER_CPUS=${OTHER_CPUS:-$others}
else
  ENVOY_CPU=${ENVOY_CPU:-0} OTHER_CPUS=${OTHER_CPUS:-0}
fi
EXT_AUTHZ_ARGS=${EXT_AUTHZ_ARGS:-}

log() { printf '\033[1mbench:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1mbench: error:\033[0m %s\n' "$*" >&2; exit 1; }

# --- tools ----------------------------------------------------------------------------------------
# Idempotent and quick when everything is there: Debian build deps, Envoy (venv), wrk.
scripts/bootstrap.sh --bench
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v taskset >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi
for tool in wrk taskset curl python3 cargo; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
ENVOY=$(command -v envoy || echo "$ROOT/.venv/bin/envoy")

if $build; then
  log "building release binaries"
  cargo build --release --locked -p ext-authz -p login-service -p demo-upstream -p bench
  # Compiled now, so no compiler runs during the measurements.
  [ "${SKIP_CRITERION:-0}" = 1 ] || cargo bench --locked -p ext-authz --bench check --bench revocation --no-run
fi
BIN=$ROOT/target/release
for bin in ext-authz login-service demo-upstream bench; do
  [ -x "$BIN/$bin" ] || die "$BIN/$bin is missing: run without --no-build"
done

# --- ports ----------------------------------------------------------------------------------------
P_LISTEN=$((8080 + PORT_OFFSET)) P_ADMIN=$((9901 + PORT_OFFSET)) P_AUTHZ=$((9001 + PORT_OFFSET))
P_METRICS=$((9002 + PORT_OFFSET)) P_LOGIN=$((5000 + PORT_OFFSET)) P_UP=$((8000 + PORT_OFFSET))
P_UP_ADMIN=$((8001 + PORT_OFFSET))
for port in "$P_AUTHZ" "$P_METRICS" "$P_LOGIN" "$P_UP" "$P_UP_ADMIN"; do
  port_busy "$port" && die "port $port is in use (another bench run?): ss -ltnp 'sport = :$port'"
done

# --- scratch state --------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/edge-auth-bench.XXXXXX)
RESULTS=$ROOT/bench/results
mkdir -p "$RESULTS" "$WORK/keys" "$WORK/data" "$WORK/logs"
RAW=$WORK/results.jsonl
: >"$RAW"
UDS=$WORK/ext-authz.sock
KID=bench
umask 077
head -c 36 /dev/urandom | base64 -w0 >"$WORK/keys/$KID" # 48 printable bytes: the HMAC key
umask 022

pids=() names=()
trap cleanup_work EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
wait_until() { # wait_until NAME PID CHECK...: poll for 30 s (lib.sh wait_ready)
  wait_ready "$1" "$2" 30 "${@:3}" || die "see $WORK/logs/$1.log"
}
# --- services -------------------------------------------------------------------------------------
export RUST_LOG=info
unset JWT_SECRET JWT_DEFAULT_KID JWT_SIGNING_KID DATABASE_URL
export DATA_DIR=$WORK/data
log "preparing login-service (SQLite in $WORK/data)"
"$BIN/login-service" migrate >"$WORK/logs/login-admin.log" 2>&1
PASSWORD=$(head -c 18 /dev/urandom | base64 -w0 | tr '+/' '-_')
printf '%s\n' "$PASSWORD" |
  "$BIN/login-service" user add bench@example.com --admin --password-stdin >>"$WORK/logs/login-admin.log" 2>&1

start demo-upstream "$OTHER_CPUS" "$BIN/demo-upstream" --addr "127.0.0.1:$P_UP" --admin-addr "127.0.0.1:$P_UP_ADMIN"
UP_PID=$last_pid
# shellcheck disable=SC2086 # EXT_AUTHZ_ARGS is a list of flags
start ext-authz "$OTHER_CPUS" "$BIN/ext-authz" --grpc-addr "127.0.0.1:$P_AUTHZ" --grpc-uds "$UDS" \
  --metrics-addr "127.0.0.1:$P_METRICS" --keys-dir "$WORK/keys" $EXT_AUTHZ_ARGS
AUTHZ_PID=$last_pid
# A second ext-authz for the runtime comparison of the direct gRPC steps: not pinned, so it
# starts a multi-threaded runtime with one worker per CPU (the default outside a 1-CPU sidecar).
P_AUTHZ_MT=$((9011 + PORT_OFFSET))
port_busy "$P_AUTHZ_MT" && die "port $P_AUTHZ_MT is in use"
# shellcheck disable=SC2086
start ext-authz-mt "0-$((NCPU - 1))" "$BIN/ext-authz" --grpc-addr "127.0.0.1:$P_AUTHZ_MT" \
  --metrics-addr "127.0.0.1:$((9012 + PORT_OFFSET))" --keys-dir "$WORK/keys" $EXT_AUTHZ_ARGS
AUTHZ_MT_PID=$last_pid
# login-service is not pinned: its ceiling is every core (argon2 on the blocking pool).
# REFRESH_MAX_ROTATIONS: the refresh step's chains rotate thousands of times in seconds; the
# default (10000 per session) would end them on a fast machine and measure refusals instead.
# LOGIN_MAX_QUEUE_WAIT: the burst step queues 100 clients on the hashing permits to measure the
# ceiling; the default bound (1.5 × one verify on several cores) would shed most of them with 503 (the overload step
# below runs its own login-service with the default).
LOGIN_MAX_QUEUE_WAIT=9s REFRESH_MAX_ROTATIONS=100000000 "$BIN/login-service" serve --http-addr "127.0.0.1:$P_LOGIN" --keys-dir "$WORK/keys" \
  >"$WORK/logs/login-service.log" 2>&1 &
LOGIN_PID=$!
pids+=("$LOGIN_PID") names+=(login-service)
wait_until demo-upstream "$UP_PID" curl -fsS "http://127.0.0.1:$P_UP_ADMIN/stats"
wait_until ext-authz "$AUTHZ_PID" test -S "$UDS"
wait_until ext-authz-mt "$AUTHZ_MT_PID" port_busy "$P_AUTHZ_MT"
wait_until login-service "$LOGIN_PID" curl -fsS "http://127.0.0.1:$P_LOGIN/readyz"

TOKEN=$(curl -fsS -u "bench@example.com:$PASSWORD" -H 'Accept: text/plain' -X POST \
  "http://127.0.0.1:$P_LOGIN/login") || die "login failed; see $WORK/logs/login-service.log"
BASIC=$(printf '%s' "bench@example.com:$PASSWORD" | base64 -w0)

# --- Envoy: six configurations, all running, each on its own port, all pinned to ENVOY_CPU ---------
python3 envoy/render.py --bench "$WORK/envoy" --secret-file "$WORK/keys/$KID" --kid "$KID" \
  --uds "$UDS" --port-offset "$PORT_OFFSET"
# The lean configs, in envoy/render.py's port order (listener offset+8081.., admin +9902..).
LEAN=(a-noauth b-jwt_authn c-ext_authz_tcp c2-ext_authz_tcp_allowlist d-ext_authz_uds)
CONFIGS=("${LEAN[@]}" e-shipped)
declare -A PORT ADMIN ENVOY_PID
PORT[e-shipped]=$P_LISTEN ADMIN[e-shipped]=$P_ADMIN
for i in "${!LEAN[@]}"; do
  PORT[${LEAN[$i]}]=$((P_LISTEN + i + 1)) ADMIN[${LEAN[$i]}]=$((P_ADMIN + i + 1))
done
# e-shipped has the HTTPS chain: Envoy reads tls/sds.yaml relative to its working directory.
"$ROOT/scripts/dev-tls.sh" "$WORK/envoy/tls" || die "scripts/dev-tls.sh failed"
for cfg in "${CONFIGS[@]}"; do # from $WORK/envoy: tls/sds.yaml is relative
  (cd "$WORK/envoy" && "$ENVOY" --mode validate --disable-hot-restart -c "$cfg.yaml") \
    >"$WORK/logs/validate-$cfg.log" 2>&1 || die "$cfg does not validate; see $WORK/logs/validate-$cfg.log"
done
start_envoys "$ENVOY_CPU" "${CONFIGS[@]}" || die "Envoy did not start; see $WORK/logs"

# Correctness before speed: each configuration lets the token through and (b)-(e) refuse none.
for cfg in "${CONFIGS[@]}"; do
  url="http://127.0.0.1:${PORT[$cfg]}/api/items"
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$url")
  [ "$code" = 200 ] || die "$cfg: GET with the token answered $code, expected 200"
  if [ "$cfg" != a-noauth ]; then
    code=$(curl -s -o /dev/null -w '%{http_code}' "$url")
    [ "$code" = 401 ] || die "$cfg: GET without a token answered $code, expected 401"
  fi
done
log "all ${#CONFIGS[@]} Envoy configurations answer (200 with the token, 401 without)"

run_wrk() { # run_wrk CFG ROUND SECONDS: one measurement (bench measure adds the CPU spent), to $RAW
  local cfg=$1 round=$2 secs=$3 url="http://127.0.0.1:${PORT[$1]}/api/items"
  WRK_LABEL=$cfg "$BIN/bench" measure --config "$cfg" --round "$round" \
    --busy "envoy_core=$ENVOY_CPU" --busy "other_cores=$OTHER_CPUS" \
    --cpu "envoy=${ENVOY_PID[$cfg]}" --cpu "authz=$AUTHZ_PID" --cpu "upstream=$UP_PID" -- \
    taskset -c "$OTHER_CPUS" wrk -t1 -c"$CONNS" -d"${secs}s" --latency --timeout 5s \
    -s bench/wrk/report.lua -H "Authorization: Bearer $TOKEN" "$url" >>"$RAW"
}

log "warm-up: ${WARMUP}s per configuration"
for cfg in "${CONFIGS[@]}"; do
  WRK_LABEL=warmup taskset -c "$OTHER_CPUS" wrk -t1 -c"$CONNS" -d"${WARMUP}s" -s bench/wrk/report.lua \
    -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:${PORT[$cfg]}/api/items" >/dev/null
done
for round in $(seq 1 "$ROUNDS"); do
  # Rotate the order each round so no configuration always runs first or last.
  for k in "${!CONFIGS[@]}"; do
    cfg=${CONFIGS[$(((k + round - 1) % ${#CONFIGS[@]}))]}
    log "round $round/$ROUNDS: $cfg (${DURATION}s, $CONNS connections)"
    run_wrk "$cfg" "$round" "$DURATION"
  done
done

# --- direct gRPC: open-loop load generator ----------------------------------------------------------
# --floor (issue #15 §1): after each step, the same step with grpc.health.v1 Health/Check to the
# same pinned ext-authz over the same connections: the framework floor Check is divided by.
FLOOR=(--floor)
[ "${SKIP_FLOOR:-0}" = 1 ] && FLOOR=()
log "direct Check: steps $GRPC_RATES, ${GRPC_DURATION}s each, $GRPC_CONNS HTTP/2 connections${FLOOR:+, each followed by the health Check floor}"
taskset -c "$ENVOY_CPU" "$BIN/bench" grpc --target "http://127.0.0.1:$P_AUTHZ" --token "$TOKEN" \
  --connections "$GRPC_CONNS" --rates "$GRPC_RATES" --duration "$GRPC_DURATION" "${FLOOR[@]}" \
  --warmup 2 --server-pid "$AUTHZ_PID" --label "pinned to CPU $OTHER_CPUS (1 worker: current-thread runtime)" >>"$RAW"
if ((NCPU >= 2)); then
  log "direct Check, runtime comparison: ext-authz on all $NCPU CPUs (multi-threaded runtime)"
  taskset -c "$ENVOY_CPU" "$BIN/bench" grpc --target "http://127.0.0.1:$P_AUTHZ_MT" --token "$TOKEN" \
    --connections "$GRPC_CONNS" --rates "${GRPC_MT_RATES:-5000,max}" --duration "$GRPC_DURATION" \
    --warmup 2 --server-pid "$AUTHZ_MT_PID" --label "not pinned ($NCPU workers: multi-threaded runtime)" >>"$RAW"
fi

# --- login: a burst of correct logins at login-service, next to the argon2 ceiling ---------------
# Directly, not through e-shipped: the shipped config's per-address login limit (50/s, issue #13)
# answers one address's burst with 429s, which measures Envoy's limit, not login-service
# (the run of 2026-12-01 10:25 got 41,832 429s of 42,595 answers that way).
log "argon2id verify time (login-service parameters)"
"$BIN/bench" argon2 --iterations "$($quick && echo 5 || echo 20)" >>"$RAW"
log "login burst: $LOGIN_CONNS clients for ${LOGIN_DURATION}s (POST /login, login-service directly)"
WRK_LABEL=login WRK_METHOD=POST "$BIN/bench" measure --config login --cpu "login=$LOGIN_PID" -- \
  wrk -t2 -c"$LOGIN_CONNS" -d"${LOGIN_DURATION}s" --latency --timeout 10s -s bench/wrk/report.lua \
  -H "Authorization: Basic $BASIC" -H 'Accept: text/plain' "http://127.0.0.1:$P_LOGIN/login" >>"$RAW"

# --- refresh (issue #17): closed-loop POST /token against login-service, its CPU per refresh ---
log "refresh: $REFRESH_SESSIONS sessions for ${REFRESH_DURATION}s (POST /token, login-service directly)"
BENCH_PASSWORD="$PASSWORD" "$BIN/bench" refresh --url "http://127.0.0.1:$P_LOGIN" \
  --email bench@example.com --sessions "$REFRESH_SESSIONS" --duration "$REFRESH_DURATION" \
  --server-pid "$LOGIN_PID" >>"$RAW"

# --- feed followers (issue #15 §2b): 1 and 500 long polls on one login-service over MariaDB ---
if [ "${SKIP_FEED:-0}" != 1 ]; then
  log "feed followers: scripts/bench-feed.sh (idle cost with 1 and 500 followers, logout → 500th)"
  feed_args=(--no-build)
  $quick && feed_args+=(--quick)
  PORT_OFFSET=$PORT_OFFSET scripts/bench-feed.sh "${feed_args[@]}" >>"$RAW" 2>>"$WORK/logs/bench-feed.log" ||
    die "bench-feed failed; see $WORK/logs/bench-feed.log"
fi

# --- the shipped config's cost (issue #15 §4) -----------------------------------------------------
# Opt-in: (c), (e) and (c) + each part of the shipped config, 12 Envoys on ports + 20000 over this
# run's, interleaved like the rounds above. The targets row "(e) ≤ 3 µs over (c)" comes from the
# Envoy section above and needs no SHIPPED_DIFFS.
if [ "${SHIPPED_DIFFS:-0}" = 1 ]; then
  log "shipped config's cost: scripts/bench-shipped.sh (one part of the shipped config at a time)"
  shipped_args=(--no-build)
  if $quick; then shipped_args+=(--quick); fi
  OUT=$RAW PORT_OFFSET=$((PORT_OFFSET + 20000)) ENVOY_CPU=$ENVOY_CPU OTHER_CPUS=$OTHER_CPUS \
    scripts/bench-shipped.sh "${shipped_args[@]}" >>"$WORK/logs/bench-shipped.log" 2>&1 ||
    die "bench-shipped failed; see $WORK/logs/bench-shipped.log"
fi

# --- login overload (issue #15 §3): the sustainable /login rate, then 2x it open-loop -----------
# Its own login-service with the default queue bound (LOGIN_MAX_QUEUE_WAIT unset: 1.5 x one verify on several cores),
# on the same SQLite data, not pinned, reached directly: from one load generator's address the
# shipped Envoy's per-address login limit would answer first. bench/src/login_overload.rs.
if [ "${SKIP_LOGIN_OVERLOAD:-0}" != 1 ]; then
  OL_CAL=${LOGIN_OVERLOAD_CALIBRATE:-$($quick && echo 4 || echo 10)}
  OL_DUR=${LOGIN_OVERLOAD_DURATION:-$($quick && echo 6 || echo 20)}
  P_LOGIN_OL=$((5010 + PORT_OFFSET))
  port_busy "$P_LOGIN_OL" && die "port $P_LOGIN_OL is in use"
  "$BIN/login-service" serve --http-addr "127.0.0.1:$P_LOGIN_OL" --keys-dir "$WORK/keys" \
    >"$WORK/logs/login-service-overload.log" 2>&1 &
  LOGIN_OL_PID=$!
  pids+=("$LOGIN_OL_PID") names+=(login-service-overload)
  wait_until login-service-overload "$LOGIN_OL_PID" curl -fsS "http://127.0.0.1:$P_LOGIN_OL/readyz"
  log "login overload: sustainable rate (${OL_CAL}s), then 2x it open-loop for ${OL_DUR}s (login-service directly)"
  BENCH_PASSWORD="$PASSWORD" "$BIN/bench" login-overload --url "http://127.0.0.1:$P_LOGIN_OL" \
    --email bench@example.com --calibrate "$OL_CAL" --duration "$OL_DUR" \
    --server-pid "$LOGIN_OL_PID" >>"$RAW" || die "login overload failed; see $WORK/logs/login-service-overload.log"
  stop_pids 5 "$LOGIN_OL_PID"
  unset 'pids[-1]' 'names[-1]'
fi

# --- footprint and revocation at 1M entries (issue #15 §5, §2) ---
# scripts/bench-scale.sh: ext-authz's and login-service's idle RSS and exec → ready; then
# SCALE_ENTRIES revocations in a fresh SQLite file: two ext-authz replicas' exec → SERVING with
# that snapshot and RSS, logout → refusal by both, the check vs an empty feed, and the query
# plans of login-service's revocation queries (SQLite, and MariaDB when reachable). Its own
# processes and ports (9100-9115 + offset); SKIP_FOOTPRINT=1 / SKIP_SCALE=1 skip its halves.
if [ "${SKIP_FOOTPRINT:-0}" != 1 ] || [ "${SKIP_SCALE:-0}" != 1 ]; then
  log "footprint and revocation at scale: scripts/bench-scale.sh (log: bench-scale.log)"
  BIN=$BIN PORT_OFFSET=$PORT_OFFSET ENVOY_CPU=$ENVOY_CPU OTHER_CPUS=$OTHER_CPUS EXT_AUTHZ_ARGS=$EXT_AUTHZ_ARGS \
    scripts/bench-scale.sh "$RAW" "$($quick && echo --quick || echo --full)" >>"$WORK/logs/bench-scale.log" 2>&1 ||
    die "bench-scale failed; see $WORK/logs/bench-scale.log"
fi

# Envoy's own view, for the record: ext_authz ok/denied/error and jwt_authn counters.
for cfg in "${CONFIGS[@]}"; do
  curl -fsS "http://127.0.0.1:${ADMIN[$cfg]}/stats" |
    grep -E '^(cluster\.[a-z_]+\.ext_authz\.(ok|denied|error|failure_mode_allowed)|http\.ingress_http\.(jwt_authn\.(allowed|denied)|downstream_rq_[2-5]xx)):' |
    sed "s/^/$cfg: /" >>"$WORK/envoy-stats.txt" || true
done

# --- criterion micro-benchmarks -------------------------------------------------------------------
if [ "${SKIP_CRITERION:-0}" != 1 ]; then
  # check: token verification and the decision; revocation: the same path with 100k revocations.
  for bench in check revocation; do
    log "criterion: cargo bench -p ext-authz --bench $bench"
    taskset -c "$OTHER_CPUS" cargo bench --locked -p ext-authz --bench "$bench" -- \
      --warm-up-time 1 --measurement-time "$($quick && echo 1 || echo 3)" --noplot \
      >>"$WORK/logs/criterion.log" 2>&1 || die "criterion failed; see $WORK/logs/criterion.log"
  done
  "$BIN/bench" criterion --dir target/criterion verify decide_allow decide_deny_malformed \
    check_request_allow decide_allow_no_revocations decide_allow_100k_revocations \
    check_request_allow_no_revocations check_request_allow_100k_revocations \
    revocation_lookup_100k >>"$RAW"
fi

# --- verified-token cache (issue #12): in process and through its own servers (ports + 20000) ----
if [ "${SKIP_CACHE:-0}" != 1 ]; then
  log "token cache: scripts/bench-cache.sh --stack (bench/results/cache.md, cache-stack.md)"
  SKIP_CRITERION=${SKIP_CRITERION:-0} scripts/bench-cache.sh --stack >>"$WORK/logs/bench-cache.log" 2>&1 ||
    die "bench-cache failed; see $WORK/logs/bench-cache.log"
fi

# --- report ---------------------------------------------------------------------------------------
cp "$RAW" "$RESULTS/latest.jsonl"
cp "$WORK/envoy-stats.txt" "$RESULTS/latest-envoy-stats.txt" 2>/dev/null || true
{
  echo "nproc=$NCPU"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "kernel=$(uname -sr)"
  echo "envoy=$("$ENVOY" --version 2>/dev/null | grep -o '[0-9a-f]*/[0-9.]*/[A-Za-z]*/[A-Z]*' | head -1)"
  echo "rustc=$(rustc --version)"
  echo "wrk=$(wrk -v 2>&1 | head -1 | cut -d' ' -f1,2)"
  echo "loadavg_at_start=$LOAD_START"
  echo "loadavg_at_end=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
  echo "quick=$quick rounds=$ROUNDS duration=$DURATION conns=$CONNS grpc_conns=$GRPC_CONNS"
  echo "login_conns=$LOGIN_CONNS login_duration=$LOGIN_DURATION envoy_cpu=$ENVOY_CPU other_cpus=$OTHER_CPUS"
  echo "refresh_sessions=$REFRESH_SESSIONS refresh_duration=$REFRESH_DURATION"
  echo "ext_authz_args=$EXT_AUTHZ_ARGS"
} >"$RESULTS/latest.env"
python3 bench/report.py "$RESULTS/latest.jsonl" "$RESULTS/latest.env" >"$RESULTS/latest.md"
# The same run's data as SVG charts (BENCHMARKS.md embeds them from the generated section).
python3 bench/charts.py "$RESULTS/latest.jsonl" "$RESULTS/charts"
if $splice; then
  python3 bench/report.py --splice BENCHMARKS.md "$RESULTS/latest.md"
fi
log "done: $RESULTS/latest.md$($splice && echo ' (spliced into BENCHMARKS.md)')"
