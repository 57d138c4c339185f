#!/usr/bin/env bash
# `make bench-cache`: the verified-token cache (issue #12, "Speed") in process — one decision
# over an HS256, EdDSA and RS256 token without the cache, as a cache hit and as a cache miss:
#   1. instructions per check under callgrind (independent of the machine's load: run N and 2N
#      checks, divide the difference by N, so key generation and minting cancel out);
#   2. criterion wall time per check (`cargo bench -p ext-authz --bench check -- decide_`), with
#      the load average, since other work on the machine inflates it.
# Writes bench/results/cache.md (and .env); BENCHMARKS.md "Verified-token cache" quotes it.
#
#   3. with --stack (run it under `flock /tmp/edge-e2e.lock`: it starts servers): release
#      ext-authz with the cache and with --token-cache-bytes 0, HS256/EdDSA/RS256 tokens, the
#      open-loop gRPC load generator (`bench grpc`: ext-authz CPU per check) and the cache hit
#      ratio from ext-authz's metrics; then Envoy's jwt_authn verifying the same EdDSA tokens
#      from the public JWKS (`local_jwks`, envoy/render.py --eddsa-jwks) beside Envoy + ext_authz
#      under wrk (CPU per request of Envoy and ext-authz). Writes bench/results/cache-stack.md.
#
#   CHECKS=2000        checks per callgrind run (the second run does 2x)
#   SKIP_CRITERION=1   instruction counts only; SKIP_INPROCESS=1: --stack part only
#   PORT_OFFSET=20000  --stack: every port = the shipped one + offset
#   RATE=max DURATION=8 CONNS=32   --stack: gRPC rate (checks/s or max: CPU per check means
#                  something only at a stated rate, see BENCHMARKS.md), seconds per step, wrk conns
# Without --stack: starts no server and binds no port.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CHECKS=${CHECKS:-2000}
stack=false
for arg in "$@"; do
  case "$arg" in
    --stack) stack=true ;;
    -h | --help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-cache: unknown option $arg (try --help)" >&2; exit 64 ;;
  esac
done
RESULTS=$ROOT/bench/results
mkdir -p "$RESULTS"
OUT=$RESULTS/cache.md
log() { printf '\033[1mbench-cache:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1mbench-cache: error:\033[0m %s\n' "$*" >&2; exit 1; }
command -v valgrind >/dev/null || die "valgrind is required (apt-get install valgrind)"

WORK=$(mktemp -d /tmp/edge-bench-cache.XXXXXX)
pids=() names=()
trap cleanup_work EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

in_process() {
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "building the benches (release profile)"
cargo bench --locked -p ext-authz --bench instructions --bench check --no-run 2>&1 | tail -1 >&2
BIN=$(cargo bench --locked -p ext-authz --bench instructions --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "instructions" and m.get("executable"):
        print(m["executable"])')
[ -x "$BIN" ] || die "no instructions bench binary"
SCENARIOS=(hs256_nocache hs256_hit eddsa_nocache eddsa_hit eddsa_miss rs256_nocache rs256_hit rs256_miss)

count() { # count SCENARIO N [service]: instructions of the whole run; its line to $WORK/SCENARIO.N
  local err=$WORK/$1.$2${3:+.$3}.err
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$@" 2>"$err" >"$WORK/$1.$2" ||
    { grep -v '^==' "$err" | head -5 >&2; return 1; }
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$err"
}
per_check() { # per_check SCENARIO [service]: (instructions(2N) - instructions(N)) / N
  local a b
  a=$(count "$1" "$CHECKS" ${2:+"$2"}) || return 1
  b=$(count "$1" "$((2 * CHECKS))" ${2:+"$2"}) || return 1
  echo $(((b - a) / CHECKS))
}
declare -A INSTR SVC RATIO
for s in "${SCENARIOS[@]}"; do
  log "callgrind: $s ($CHECKS and $((2 * CHECKS)) checks; decide, then check_request)"
  INSTR[$s]=$(per_check "$s") || die "$s failed (decide)"
  SVC[$s]=$(per_check "$s" service) || die "$s failed (check_request)"
  # "checks=N allowed=N cache_hits=H cache_misses=M" of the last run (its warm-up check included).
  RATIO[$s]=$(awk '{for (i = 1; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}}
    END {t = v["cache_hits"] + v["cache_misses"]; if (t == 0) print "—"; else printf "%.1f %%", 100 * v["cache_hits"] / t}' \
    "$WORK/$s.$((2 * CHECKS))")
done

declare -A NS SNS
if [ "${SKIP_CRITERION:-0}" != 1 ]; then
  log "criterion: decide_* and check_request_* (3 s each)"
  cargo bench --locked -p ext-authz --bench check -- '^(decide|check_request)_(hs256|eddsa|rs256)_' \
    --warm-up-time 1 --measurement-time 3 --noplot >"$WORK/criterion.log" 2>&1 ||
    die "criterion failed: $(tail -5 "$WORK/criterion.log")"
  median() { python3 -c 'import json, sys; print(round(json.load(open(sys.argv[1]))["median"]["point_estimate"] / 1000, 2))' "target/criterion/$1/new/estimates.json"; }
  for s in "${SCENARIOS[@]}"; do
    NS[$s]=$(median "decide_$s")
    SNS[$s]=$(median "check_request_$s")
  done
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

{
  echo "| scenario | \`decide\` instructions | vs HS256 | \`check_request\` instructions | vs HS256 | \`decide\` µs (criterion) | \`check_request\` µs (criterion) | cache hit ratio |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for s in "${SCENARIOS[@]}"; do
    rel() { python3 -c "print(f'{$1 / $2 * 100:.0f} %')"; }
    echo "| \`$s\` | ${INSTR[$s]} | $(rel "${INSTR[$s]}" "${INSTR[hs256_nocache]}") | ${SVC[$s]} | $(rel "${SVC[$s]}" "${SVC[hs256_nocache]}") | ${NS[$s]:-—} | ${SNS[$s]:-—} | ${RATIO[$s]} |"
  done
  echo
  echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//');"
  echo "load average $LOAD_START at the start, $LOAD_END at the end (the criterion columns depend on it;"
  echo "the instruction counts do not). $CHECKS and $((2 * CHECKS)) checks per callgrind run; $(rustc --version)."
} >"$OUT"
cat "$OUT"
log "wrote $OUT"
}


stack_run() {
  scripts/bootstrap.sh --bench
  for tool in wrk taskset curl openssl python3; do
    command -v "$tool" >/dev/null || die "$tool is required"
  done
  local envoy off ncpu envoy_cpu other_cpus rate duration conns
  envoy=$(command -v envoy || echo "$ROOT/.venv/bin/envoy")
  off=${PORT_OFFSET:-20000} rate=${RATE:-max} duration=${DURATION:-8} conns=${CONNS:-32}
  ncpu=$(nproc)
  envoy_cpu=0 other_cpus=$((ncpu > 1 ? 1 : 0))
  ((ncpu > 2)) && other_cpus=1-$((ncpu - 1))
  log "building release binaries (ext-authz, bench, demo-upstream)"
  cargo build --release --locked -p ext-authz -p bench -p demo-upstream 2>&1 | tail -1 >&2
  local bin=$ROOT/target/release raw=$WORK/stack.jsonl load_start
  load_start=$(cut -d' ' -f1-3 /proc/loadavg)
  : >"$raw"

  # Keys: the gateway's dir holds the HMAC secret and two PUBLIC keys; private halves stay out.
  mkdir -p "$WORK/keys" "$WORK/logs"
  (umask 077 && head -c 36 /dev/urandom | base64 -w0 >"$WORK/keys/bench")
  openssl genpkey -algorithm ed25519 -out "$WORK/ed1.pem" 2>/dev/null
  openssl pkey -in "$WORK/ed1.pem" -pubout -out "$WORK/keys/ed1.pub.pem"
  openssl genrsa -out "$WORK/rs1.pem" 2048 2>/dev/null
  openssl rsa -in "$WORK/rs1.pem" -pubout -out "$WORK/keys/rs1.pub.pem" 2>/dev/null
  openssl rsa -in "$WORK/rs1.pem" -traditional -outform DER -out "$WORK/rs1.der" 2>/dev/null
  # The public JWKS of ed1, as login-service would publish it (the SPKI's last 32 bytes are x).
  openssl pkey -in "$WORK/ed1.pem" -pubout -outform DER |
    python3 -c 'import base64, json, sys
x = base64.urlsafe_b64encode(sys.stdin.buffer.read()[-32:]).rstrip(b"=").decode()
print(json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": "ed1", "x": x}]}))' \
      >"$WORK/jwks.json"
  declare -A TOKEN
  TOKEN[hs256]=$("$bin/bench" mint --key "$WORK/keys/bench" --kid bench --alg hs256)
  TOKEN[eddsa]=$("$bin/bench" mint --key "$WORK/ed1.pem" --kid ed1 --alg eddsa)
  TOKEN[rs256]=$("$bin/bench" mint --key "$WORK/rs1.der" --kid rs1 --alg rs256)

  local p_up=$((8000 + off)) p_up_admin=$((8001 + off)) p_cache=$((9001 + off))
  local p_cache_m=$((9002 + off)) p_nocache=$((9011 + off)) p_nocache_m=$((9012 + off))
  for port in "$p_up" "$p_up_admin" "$p_cache" "$p_cache_m" "$p_nocache" "$p_nocache_m"; do
    port_busy "$port" && die "port $port is in use"
  done
  wait_port() { # wait_port NAME PID PORT (lib.sh wait_ready)
    wait_ready "$1" "$2" 30 port_busy "$3" || die "see $WORK/logs/$1.log"
  }
  export RUST_LOG=warn
  start demo-upstream "$other_cpus" "$bin/demo-upstream" --addr "127.0.0.1:$p_up" --admin-addr "127.0.0.1:$p_up_admin"
  local up_pid=$last_pid
  start ext-authz-cache "$other_cpus" "$bin/ext-authz" --grpc-addr "127.0.0.1:$p_cache" \
    --metrics-addr "127.0.0.1:$p_cache_m" --keys-dir "$WORK/keys"
  local cache_pid=$last_pid
  start ext-authz-nocache "$other_cpus" "$bin/ext-authz" --grpc-addr "127.0.0.1:$p_nocache" \
    --metrics-addr "127.0.0.1:$p_nocache_m" --keys-dir "$WORK/keys" --token-cache-bytes 0
  local nocache_pid=$last_pid
  wait_port demo-upstream "$up_pid" "$p_up"
  wait_port ext-authz-cache "$cache_pid" "$p_cache"
  wait_port ext-authz-nocache "$nocache_pid" "$p_nocache"

  cache_counts() { # hits misses of the cached instance
    curl -fsS "http://127.0.0.1:$p_cache_m/metrics" |
      awk '/^ext_authz_token_cache_hits_total /{h=$2} /^ext_authz_token_cache_misses_total /{m=$2} END {print h+0, m+0}'
  }
  local alg inst target pid before after
  for alg in hs256 eddsa rs256; do
    for inst in cache nocache; do
      if [ "$inst" = cache ]; then target=$p_cache pid=$cache_pid; else target=$p_nocache pid=$nocache_pid; fi
      log "gRPC: $alg, ext-authz $inst, rate $rate for ${duration}s"
      before=$(cache_counts)
      taskset -c "$envoy_cpu" "$bin/bench" grpc --target "http://127.0.0.1:$target" \
        --token "${TOKEN[$alg]}" --connections 4 --rates "$rate" --duration "$duration" \
        --warmup 1 --server-pid "$pid" --label "$alg $inst" >>"$raw"
      after=$(cache_counts)
      echo "{\"kind\":\"cache_counts\",\"label\":\"$alg $inst\",\"before\":\"$before\",\"after\":\"$after\"}" >>"$raw"
    done
  done

  # Envoy: jwt_authn with the EdDSA public JWKS, beside ext_authz (the cached instance), same token.
  python3 envoy/render.py --bench "$WORK/envoy" --secret-file "$WORK/keys/bench" --kid bench \
    --uds "$WORK/unused.sock" --port-offset "$off" --eddsa-jwks "$WORK/jwks.json"
  declare -A EPORT EPID
  EPORT[c-ext_authz_tcp]=$((8080 + off + 3)) EPORT[f-jwt_authn_eddsa]=$((8080 + off + 6))
  local cfg
  for cfg in c-ext_authz_tcp f-jwt_authn_eddsa; do
    port_busy "${EPORT[$cfg]}" && die "port ${EPORT[$cfg]} is in use"
    start "envoy-$cfg" "$envoy_cpu" "$envoy" -c "$WORK/envoy/$cfg.yaml" --concurrency 1 \
      --disable-hot-restart --log-level warn
    EPID[$cfg]=$last_pid
    wait_port "envoy-$cfg" "${EPID[$cfg]}" "${EPORT[$cfg]}"
  done
  for cfg in c-ext_authz_tcp f-jwt_authn_eddsa; do
    local url="http://127.0.0.1:${EPORT[$cfg]}/api/items" code
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${TOKEN[eddsa]}" "$url")
    [ "$code" = 200 ] || die "$cfg: the EdDSA token answered $code, expected 200"
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${TOKEN[hs256]}x" "$url")
    [ "$code" = 401 ] || die "$cfg: a bad token answered $code, expected 401"
    log "wrk: $cfg, EdDSA token, $conns connections, ${duration}s"
    before=$(cache_counts)
    WRK_LABEL=$cfg "$bin/bench" measure --config "$cfg" --busy "envoy_core=$envoy_cpu" \
      --cpu "envoy=${EPID[$cfg]}" --cpu "authz=$cache_pid" -- \
      taskset -c "$other_cpus" wrk -t1 -c"$conns" -d"${duration}s" --latency --timeout 5s \
      -s bench/wrk/report.lua -H "Authorization: Bearer ${TOKEN[eddsa]}" "$url" >>"$raw"
    after=$(cache_counts)
    echo "{\"kind\":\"cache_counts\",\"label\":\"$cfg\",\"before\":\"$before\",\"after\":\"$after\"}" >>"$raw"
  done
  cp "$raw" "$RESULTS/cache-stack.jsonl"
  python3 - "$raw" "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)" >"$RESULTS/cache-stack.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
counts = {r["label"]: r for r in rows if r["kind"] == "cache_counts"}
def ratio(label):
    c = counts.get(label)
    if not c:
        return "—"
    (h0, m0), (h1, m1) = ([float(x) for x in c[k].split()] for k in ("before", "after"))
    h, m = h1 - h0, m1 - m0
    return "—" if h + m == 0 else f"{100 * h / (h + m):.1f} % ({int(h + m)} lookups)"
print("| token | ext-authz | checks/s achieved | ext-authz CPU µs / check | p50 µs | p99 µs | cache hit ratio |")
print("|---|---|---:|---:|---:|---:|---:|")
for r in rows:
    if r["kind"] == "grpc":
        alg, inst = r["label"].split()
        cpu = r["server_cpu_us_per_check"]
        print(f"| {alg} | {'cache' if inst == 'cache' else '`--token-cache-bytes 0`'} | {r['achieved_rps']:.0f} "
              f"| {cpu:.1f} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | {ratio(r['label']) if inst == 'cache' else '—'} |")
print()
print("| EdDSA token through Envoy (wrk) | requests/s | Envoy CPU µs / request | ext-authz CPU µs / request | Envoy + ext-authz | p50 µs | p99 µs | cache hit ratio |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    if r["kind"] != "grpc" and r["kind"] != "cache_counts" and "envoy_cpu_us" in r:
        n = max(r["requests"], 1)
        e, a = r["envoy_cpu_us"] / n, (r["authz_cpu_us"] / n if r["config"].startswith("c") else 0.0)
        name = {"c-ext_authz_tcp": "Envoy + ext_authz (TCP) → ext-authz with the cache",
                "f-jwt_authn_eddsa": "Envoy `jwt_authn`, `local_jwks` (the public JWKS)"}[r["config"]]
        print(f"| {name} | {r['rps']:.0f} | {e:.1f} | {a:.1f} | {e + a:.1f} | {r['p50_us']} | {r['p99_us']} "
              f"| {ratio(r['config']) if r['config'].startswith('c') else '—'} |")
print()
print(f"Load average {sys.argv[2]} at the start, {sys.argv[3]} at the end.")
PY
  cat "$RESULTS/cache-stack.md"
  log "wrote $RESULTS/cache-stack.md"
}

[ "${SKIP_INPROCESS:-0}" = 1 ] || in_process
if $stack; then stack_run; fi
