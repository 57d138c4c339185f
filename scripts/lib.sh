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
