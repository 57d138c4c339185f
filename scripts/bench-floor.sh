#!/usr/bin/env bash
# Issue #15 §1: ext-authz builds side by side against the framework floor. Each server (one per
# `LABEL=BINARY` argument; default: target/release/ext-authz as "this") runs pinned to the same
# core with the same key; interleaved rounds of `bench grpc --floor` (each step: Check, then the
# grpc.health.v1 health Check over the same connections) with CPU per call from /proc. A build
# from another commit given here shows what a change cost or saved, in one run.
#
#   scripts/bench-floor.sh [LABEL=BINARY ...]       e.g. before=/tmp/ext-authz-main this=target/release/ext-authz
#
# Environment: ROUNDS=3 RATES=1000,5000,10000,max DURATION=6 CPU=1 (the servers' core)
#              GEN_CPUS=0 (the load generator's) TOKEN_CACHE_BYTES (unset: each build's default)
#              PERF=SECONDS: also `perf record` the first server's max step of round 1 (needs perf)
# Prints the JSON lines (bench/results/floor.jsonl) and a table (bench/results/floor.md).
# Everything listens on 127.0.0.1; every process started here is stopped on exit (by pid).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

ROUNDS=${ROUNDS:-3} RATES=${RATES:-1000,5000,10000,max} DURATION=${DURATION:-6}
CPU=${CPU:-$(($(nproc) > 1 ? 1 : 0))} GEN_CPUS=${GEN_CPUS:-0} PERF=${PERF:-}
BIN=$ROOT/target/release
log() { printf '\033[1mbench-floor:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1mbench-floor: error:\033[0m %s\n' "$*" >&2; exit 1; }
(($#)) || set -- "this=$BIN/ext-authz"
[ -x "$BIN/bench" ] || die "$BIN/bench is missing: cargo build --release -p bench"

bench_workdir bench-floor
mkdir -p "$ROOT/bench/results"

unset JWT_SECRET OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
export RUST_LOG=warn
labels=()
declare -A PORT PID
port=29201
for arg in "$@"; do
  label=${arg%%=*} bin=${arg#*=}
  [ -x "$bin" ] || die "$bin is not an executable"
  for p in "$port" $((port + 1)); do port_busy "$p" && die "port $p is in use"; done
  taskset -c "$CPU" "$bin" --grpc-addr "127.0.0.1:$port" --metrics-addr "127.0.0.1:$((port + 1))" \
    --keys-dir "$WORK/keys" >"$WORK/$label.log" 2>&1 &
  pids+=($!)
  labels+=("$label") PORT[$label]=$port PID[$label]=$!
  port=$((port + 2))
done
for label in "${labels[@]}"; do
  for _ in $(seq 1 300); do
    port_busy "${PORT[$label]}" && break
    kill -0 "${PID[$label]}" 2>/dev/null || die "$label exited during startup; see $WORK/$label.log"
    sleep 0.1
  done
done
BENCH_TOKEN=$("$BIN/bench" mint --key "$WORK/keys/bench" --kid bench --alg hs256)
export BENCH_TOKEN

RAW=$ROOT/bench/results/floor.jsonl
: >"$RAW"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq 1 "$ROUNDS"); do
  n=${#labels[@]}
  for k in "${!labels[@]}"; do
    # Rotate the order each round so no build always runs first.
    label=${labels[$(((k + round - 1) % n))]}
    log "round $round/$ROUNDS: $label"
    if [ -n "$PERF" ] && ((round == 1)) && [ "$label" = "${labels[0]}" ]; then
      # The max step's Check: wait for the Check-only steps before it, then sample.
      (
        sleep "$(python3 -c "import sys; r=sys.argv[1].split(','); print((len(r)-1)*2*(float(sys.argv[2])+2)+2.5)" "$RATES" "$DURATION")"
        perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -o "$WORK/perf.data" -p "${PID[$label]}" -- sleep "$PERF" 2>"$WORK/perf.log"
      ) &
      perf_job=$!
    fi
    taskset -c "$GEN_CPUS" "$BIN/bench" grpc --target "http://127.0.0.1:${PORT[$label]}" \
      --connections 4 --rates "$RATES" --duration "$DURATION" --warmup 2 --floor \
      --server-pid "${PID[$label]}" --round "$round" --label "$label" >>"$RAW"
    if [ -n "${perf_job:-}" ]; then
      wait "$perf_job" || true
      cp "$WORK/perf.data" "$ROOT/bench/results/floor-perf.data" 2>/dev/null || true
      perf_job=
    fi
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$RAW" "$LOAD_START" "$LOAD_END" "${labels[@]}" <<'EOF' | tee "$ROOT/bench/results/floor.md"
import json, statistics, sys
raw, load_start, load_end, *labels = sys.argv[1:]
rows = [json.loads(l) for l in open(raw) if l.strip()]
print(f"Load average {load_start} at the start, {load_end} at the end; median of "
      f"{max(r['round'] for r in rows)} interleaved rounds (range).\n")
print("| step | build | RPC | checks/s | p50 µs | p99 µs | CPU µs/call | Check ÷ health: p50, p99, CPU |")
print("|---|---|---|---:|---:|---:|---:|---|")
def med(rs, k):
    v = [r[k] for r in rs if r.get(k) is not None]
    return (statistics.median(v), min(v), max(v)) if v else (None, None, None)
steps = list(dict.fromkeys(r["step"] for r in rows))
for step in steps:
    for label in labels:
        got = {}
        for kind in ("grpc", "grpc_floor"):
            rs = [r for r in rows if r["step"] == step and r["label"] == label and r["kind"] == kind]
            if not rs:
                continue
            got[kind] = rs
            m = {k: med(rs, k) for k in ("achieved_rps", "p50_us", "p99_us", "server_cpu_us_per_check")}
            cell = lambda k, nd: "–" if m[k][0] is None else f"{m[k][0]:.{nd}f} ({m[k][1]:.{nd}f}–{m[k][2]:.{nd}f})"
            ratio = ""
            if kind == "grpc_floor" and "grpc" in got:
                # Per round, Check ÷ health of the same round; median and range over rounds.
                def per_round(k):
                    v = []
                    for c in got["grpc"]:
                        h = next((h for h in rs if h["round"] == c["round"]), None)
                        if h and c.get(k) and h.get(k):
                            v.append(c[k] / h[k])
                    return f"{statistics.median(v):.2f}× ({min(v):.2f}–{max(v):.2f})" if v else "–"
                ratio = ", ".join(per_round(k) for k in ("p50_us", "p99_us", "server_cpu_us_per_check"))
            print(f"| {step} | {label} | {'Check' if kind == 'grpc' else 'health'} | {m['achieved_rps'][0]:.0f} "
                  f"| {cell('p50_us', 0)} | {cell('p99_us', 0)} | {cell('server_cpu_us_per_check', 1)} | {ratio} |")
EOF
