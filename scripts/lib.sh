# shellcheck shell=bash
# Shell functions shared by scripts/run.sh and scripts/bench.sh: sourced, not run.

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
