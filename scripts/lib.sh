# shellcheck shell=bash
# Shell functions shared by scripts/run.sh, smoke-run.sh and the bench scripts: sourced, not run.

# port_busy PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# stop_pids SECONDS PID...: SIGTERM every PID, give them SECONDS to exit, then SIGKILL the rest
# and reap them all.
stop_pids() {
  local grace=$1
  shift
  kill -TERM "$@" 2>/dev/null || true
  for _ in $(seq 1 $((grace * 10))); do
    local alive=false pid
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=true; done
    $alive || break
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null || true
  wait "$@" 2>/dev/null || true
}

# wait_ready NAME PID SECONDS CHECK...: runs CHECK (its output discarded) every 0.1 s until it
# succeeds (returns 0), or PID has exited or SECONDS have passed (returns 1, the reason on
# stderr). The one readiness loop of the scripts: callers add where NAME's log is.
wait_ready() {
  local name=$1 pid=$2 limit=$3
  local deadline=$((SECONDS + limit))
  shift 3
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited during startup" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "$name not ready after ${limit} s" >&2
      return 1
    fi
    sleep 0.1
  done
}

# bench_options NAME HELP_LINES ARG...: the bench scripts' options --no-build, --quick and
# --help (prints lines HELP_LINES, e.g. 2,20, of the script); sets build and quick (true/false).
# shellcheck disable=SC2034 # build and quick are read by the calling script
bench_options() {
  local name=$1 help=$2 arg
  shift 2
  build=true quick=false
  for arg in "$@"; do
    case "$arg" in
      --no-build) build=false ;;
      --quick) quick=true ;;
      -h | --help) sed -n "${help}p" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *) echo "$name: unknown option $arg (try --help)" >&2; exit 64 ;;
    esac
  done
}

# start NAME CPUS CMD...: CMD in the background pinned to CPUS (taskset), its output in
# $WORK/logs/NAME.log; appends its pid to `pids` and NAME to `names`, sets `last_pid`.
start() {
  local name=$1 cpus=$2
  shift 2
  taskset -c "$cpus" "$@" >"$WORK/logs/$name.log" 2>&1 &
  last_pid=$!
  pids+=("$last_pid") names+=("$name")
}

# start_envoys CPU CONFIG...: one Envoy per $WORK/envoy/CONFIG.yaml ($ENVOY, --concurrency 1,
# pinned to CPU, hot restart off), run from $WORK/envoy (tls/sds.yaml is relative to Envoy's
# working directory) on the ports of the caller's PORT and ADMIN arrays; records each pid in
# ENVOY_PID and waits (30 s each) until every one is ready. Envoy's stdout, a config's access log,
# goes to $WORK/logs/envoy-CONFIG.log: writing it is part of that config's cost.
start_envoys() {
  local cpu=$1 cfg
  shift
  for cfg in "$@"; do
    if port_busy "${PORT[$cfg]}" || port_busy "${ADMIN[$cfg]}"; then
      echo "$cfg: port ${PORT[$cfg]} or ${ADMIN[$cfg]} is in use" >&2
      return 1
    fi
  done
  pushd "$WORK/envoy" >/dev/null || return 1
  for cfg in "$@"; do
    start "envoy-$cfg" "$cpu" "$ENVOY" -c "$WORK/envoy/$cfg.yaml" --concurrency 1 \
      --disable-hot-restart --log-level warn
    # shellcheck disable=SC2004 # ENVOY_PID is the caller's associative array
    ENVOY_PID[$cfg]=$last_pid
  done
  popd >/dev/null || return 1
  for cfg in "$@"; do
    wait_ready "envoy-$cfg" "${ENVOY_PID[$cfg]}" 30 \
      curl -fsS "http://127.0.0.1:${ADMIN[$cfg]}/ready" || return 1
  done
}

# cleanup_work: the bench scripts' EXIT trap: stops every pid in `pids` (SIGTERM, 5 s, SIGKILL),
# deletes $WORK after a success and keeps it, saying so, after a failure; exits with the status.
# bench_workdir NAME: the bench scripts' working directory: WORK=/tmp/edge-auth-NAME.XXXXXX
# holding keys/bench (a random HS256 key, mode 600), empty `pids` and `names`, and cleanup_work
# on exit (INT and TERM exit 130 and 143 through it).
# shellcheck disable=SC2034 # WORK, pids and names are the caller's
bench_workdir() {
  WORK=$(mktemp -d "/tmp/edge-auth-$1.XXXXXX")
  mkdir -p "$WORK/keys"
  (umask 077 && head -c 36 /dev/urandom | base64 -w0 >"$WORK/keys/bench")
  pids=() names=()
  trap cleanup_work EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

cleanup_work() {
  local status=$?
  if ((${#pids[@]})); then stop_pids 5 "${pids[@]}"; fi
  if ((status == 0)); then rm -rf "$WORK"; else echo "logs kept in $WORK" >&2; fi
  exit "$status"
}
