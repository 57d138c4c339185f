#!/usr/bin/env bash
# `make bench` (last step), issue #14: what traces cost ext-authz's check. Two ext-authz processes
# with the same key, pinned to the same core: one without OTEL_EXPORTER_OTLP_ENDPOINT (tracing
# off, the default) and one exporting every check's span (100 % sampled, no parent: the worst
# case) to a real OTLP/gRPC collector (`bench otlp-sink`). Interleaved rounds of `bench grpc` at a
# fixed rate and flat out; CPU per check from /proc. Prints a Markdown table and writes
# bench/results/traces.{jsonl,md}.
#
#   scripts/bench-traces.sh [--no-build] [--quick]
# With BASELINE=PATH (an ext-authz built from a commit before traces existed), a third server,
# "before", shows whether tracing OFF made the check slower than it was. Every server runs with
# the token cache off (TOKEN_CACHE_BYTES=0) so that only the tracing code differs from a
# baseline that predates the cache.
#
# Environment: ROUNDS=3 RATES=1000,max DURATION=8 CPU=1 (the core both servers share)
#              BIN_DIR=target/release (where the binaries are)
#              GEN_CPUS=0 (the load generator's cores)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

bench_options bench-traces 2,11 "$@"
$quick && : "${ROUNDS:=1}" "${DURATION:=3}"
ROUNDS=${ROUNDS:-3} RATES=${RATES:-1000,max} DURATION=${DURATION:-8}
CPU=${CPU:-$(($(nproc) > 1 ? 1 : 0))} GEN_CPUS=${GEN_CPUS:-0}
P_OFF=29101 P_ON=29103 P_LOGIN=29105 P_BEFORE=29107 BASELINE=${BASELINE:-}
log() { printf '\033[1mbench-traces:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1mbench-traces: error:\033[0m %s\n' "$*" >&2; exit 1; }
for port in $P_OFF $((P_OFF + 1)) $P_ON $((P_ON + 1)) $P_LOGIN $P_BEFORE $((P_BEFORE + 1)); do
  port_busy "$port" && die "port $port is in use"
done

if $build; then
  cargo build --release --locked -p ext-authz -p login-service -p bench --bins
fi
BIN=${BIN_DIR:-$ROOT/target/release}
bench_workdir bench-traces
mkdir -p "$WORK/data" "$ROOT/bench/results"
wait_port() { # wait_port PORT PID (lib.sh wait_ready)
  wait_ready "port $1" "$2" 30 port_busy "$1" || die "see the logs in $WORK"
}

unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT JWT_SECRET DATABASE_URL
export RUST_LOG=warn DATA_DIR=$WORK/data TOKEN_CACHE_BYTES=0
"$BIN/bench" otlp-sink >"$WORK/sink.json" 2>"$WORK/sink.log" &
pids+=($!)
wait_ready otlp-sink "$!" 10 test -s "$WORK/sink.json" || die "see $WORK/sink.log"
SINK_PORT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$WORK/sink.json")

taskset -c "$CPU" "$BIN/ext-authz" --grpc-addr "127.0.0.1:$P_OFF" --metrics-addr "127.0.0.1:$((P_OFF + 1))" \
  --keys-dir "$WORK/keys" >"$WORK/off.log" 2>&1 &
OFF_PID=$! pids+=($!)
# edge_process=info: its one start-up line says the exporter is installed (checked below).
RUST_LOG=warn,edge_process=info OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$SINK_PORT taskset -c "$CPU" "$BIN/ext-authz" \
  --grpc-addr "127.0.0.1:$P_ON" --metrics-addr "127.0.0.1:$((P_ON + 1))" \
  --keys-dir "$WORK/keys" >"$WORK/on.log" 2>&1 &
ON_PID=$! pids+=($!)
setups="off on"
if [ -n "$BASELINE" ]; then
  [ -x "$BASELINE" ] || die "BASELINE=$BASELINE is not an executable"
  taskset -c "$CPU" "$BASELINE" --grpc-addr "127.0.0.1:$P_BEFORE" \
    --metrics-addr "127.0.0.1:$((P_BEFORE + 1))" --keys-dir "$WORK/keys" >"$WORK/before.log" 2>&1 &
  BEFORE_PID=$! pids+=($!)
  wait_port "$P_BEFORE" "$BEFORE_PID"
  setups="before off on"
fi
"$BIN/login-service" migrate >"$WORK/login.log" 2>&1
PASSWORD=$(head -c 18 /dev/urandom | base64 -w0 | tr '+/' '-_')
printf '%s\n' "$PASSWORD" | "$BIN/login-service" user add bench@example.com --admin --password-stdin >>"$WORK/login.log" 2>&1
"$BIN/login-service" serve --http-addr "127.0.0.1:$P_LOGIN" --keys-dir "$WORK/keys" >>"$WORK/login.log" 2>&1 &
LOGIN_PID=$! pids+=($!)
wait_port "$P_OFF" "$OFF_PID"
wait_port "$P_ON" "$ON_PID"
wait_port "$P_LOGIN" "$LOGIN_PID"
BENCH_TOKEN=$(curl -fsS -u "bench@example.com:$PASSWORD" -H 'Accept: text/plain' -X POST "http://127.0.0.1:$P_LOGIN/login")
export BENCH_TOKEN
grep -q "exporting traces" "$WORK/on.log" || die "the traced ext-authz does not export; see $WORK/on.log"

RAW=$ROOT/bench/results/traces.jsonl
: >"$RAW"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq 1 "$ROUNDS"); do
  for setup in $setups; do
    case $setup in
      off) port=$P_OFF pid=$OFF_PID ;;
      on) port=$P_ON pid=$ON_PID ;;
      before) port=$P_BEFORE pid=$BEFORE_PID ;;
    esac
    log "round $round/$ROUNDS: $setup"
    # The load generator on the other core(s), the server alone on $CPU.
    taskset -c "$GEN_CPUS" "$BIN/bench" grpc --target "http://127.0.0.1:$port" \
      --rates "$RATES" --duration "$DURATION" --warmup 2 --server-pid "$pid" \
      --round "$round" --label "tracing_$setup" >>"$RAW"
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$RAW" "$LOAD_START" "$LOAD_END" "$ROOT/bench/results/traces.md" <<'PY'
import json, statistics, sys
raw, load_start, load_end, out = sys.argv[1:5]
rows = [json.loads(line) for line in open(raw) if line.strip()]
steps = sorted({r["step"] for r in rows}, key=lambda s: (s == "max", int(s) if s != "max" else 0))
labels = [l for l in ("tracing_before", "tracing_off", "tracing_on") if any(r["label"] == l for r in rows)]
names = {"tracing_before": "before (no tracing code)", "tracing_off": "off (default)",
         "tracing_on": "on (every check exported)"}
def med(label, step, key):
    vals = [r[key] for r in rows if r["label"] == label and r["step"] == step and r[key] is not None]
    return (statistics.median(vals), min(vals), max(vals)) if vals else (float("nan"),) * 3
lines = [f"Load average {load_start} at the start, {load_end} at the end; median of "
         f"{max(r['round'] for r in rows)} interleaved rounds (range); token cache off in every server.", "",
         "| step | ext-authz | achieved checks/s | p50 µs | p99 µs | CPU µs/check | CPU ÷ off |",
         "|---|---|---:|---:|---:|---:|---:|"]
for step in steps:
    off_cpu = med("tracing_off", step, "server_cpu_us_per_check")[0]
    for label in labels:
        rps, p50, p99 = (med(label, step, k) for k in ("achieved_rps", "p50_us", "p99_us"))
        cpu = med(label, step, "server_cpu_us_per_check")
        lines.append(f"| {step} | {names[label]} | {rps[0]:.0f} | {p50[0]:.0f} ({p50[1]:.0f}–{p50[2]:.0f}) "
                     f"| {p99[0]:.0f} ({p99[1]:.0f}–{p99[2]:.0f}) | {cpu[0]:.1f} ({cpu[1]:.1f}–{cpu[2]:.1f}) "
                     f"| {cpu[0] / off_cpu:.2f}× |")
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
PY
