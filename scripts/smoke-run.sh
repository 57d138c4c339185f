#!/usr/bin/env bash
# The README's quick start the way a newcomer meets it (`make smoke`, part of `make test`):
# `scripts/run.sh` — bootstrap, build, start — with a fresh DATA_DIR in the background, then the
# walkthrough it prints, then SIGTERM and a check that it cleaned up after itself.
#
#   scripts/smoke-run.sh             run.sh --debug (the binaries `make test` already built)
#   scripts/smoke-run.sh --uds       the same with run.sh --uds: Envoy reaches ext-authz over a
#                                    Unix socket (envoy/envoy-uds.yaml), checked to be the one used
#   SMOKE_PROFILE=release scripts/smoke-run.sh
#                                    exactly `make run` (cargo build --release)
#
# Asserts: the walkthrough appears; login 200 with a token; protected route 200 with the
# identity headers; no token 401 missing_token; logout 204, then the same token 401 "token
# revoked" (so ext-authz follows the feed with the generated REVOCATION_FEED_TOKEN); the feed
# itself 401 without that token; only ext-authz and login-service have that token in their
# environment (not demo-upstream, not Envoy); after SIGTERM run.sh exits 143 and no port and no process of
# the stack is left. Uses the fixed local ports like the e2e tests: on a shared machine run it
# under `flock /tmp/edge-e2e.lock`. SMOKE_TIMEOUT (default 900 s) bounds the start, build included.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

PROFILE=${SMOKE_PROFILE:-debug}
TIMEOUT=${SMOKE_TIMEOUT:-900}
LISTEN=http://127.0.0.1:8080
PORTS=(8080 8443 9901 9001 9002 5000 8000 8001)

log() { printf 'smoke: %s\n' "$*" >&2; }
fail() {
  printf 'smoke: FAIL: %s\n' "$*" >&2
  if [ -f "${out:-}" ]; then
    printf -- '--- run.sh output (last 40 lines) ---\n' >&2
    tail -n 40 "$out" >&2
  fi
  exit 1
}

# Process look-ups straight from /proc, so the checks below cannot pass vacuously on a machine
# without procps (a fresh Debian image has no pgrep).
# children_of PID: the PIDs whose parent is PID.
children_of() {
  local stat fields ppid dir
  for stat in /proc/[0-9]*/stat; do
    fields=$(cat "$stat" 2>/dev/null) || continue
    fields=${fields##*) } # after "pid (comm) "; comm may contain spaces and parentheses
    read -r _ ppid _ <<<"$fields"
    if [ "$ppid" = "$1" ]; then
      dir=${stat%/stat}
      echo "${dir#/proc/}"
    fi
  done
}
# processes_naming TEXT: "PID: command line" of every process whose command line contains TEXT.
processes_naming() {
  local file cmd dir
  for file in /proc/[0-9]*/cmdline; do
    # The process may be gone between the glob and the read: skip it, silently.
    cmd=$({ tr '\0' ' ' <"$file"; } 2>/dev/null) || continue
    case $cmd in
      *"$1"*)
        dir=${file%/cmdline}
        echo "${dir#/proc/}: $cmd"
        ;;
    esac
  done
}

tmp=$(mktemp -d)
out=$tmp/run.out
run_pid=
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local status=$?
  if [ -n "$run_pid" ] && kill -0 "$run_pid" 2>/dev/null; then
    stop_pids 15 "$run_pid"
  fi
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT

args=("$@")
[ "$PROFILE" = debug ] && args+=(--debug)
UDS_PATH=/tmp/edge-auth/ext-authz.sock # as scripts/run.sh and envoy/envoy-uds.yaml
uds=false
for arg in "$@"; do [ "$arg" = --uds ] && uds=true; done
log "starting scripts/run.sh ${args[*]} (DATA_DIR=$tmp/data)"
: >"$out"
DATA_DIR=$tmp/data READY_TIMEOUT=120 scripts/run.sh "${args[@]}" </dev/null >"$out" 2>&1 &
run_pid=$!

# --- the walkthrough appears (or run.sh dies, or the deadline passes) ---------------------------
wait_ready run.sh "$run_pid" "$TIMEOUT" grep -q '^Stack is up on ' "$out" ||
  fail "no walkthrough: the stack did not come up (run.sh's output: $out)"
log "stack up after ${SECONDS}s"

# --uds: Envoy runs the UDS config and ext-authz serves that socket, so the requests below
# travel over it (the TCP config would reach ext-authz on 9001 instead).
if $uds; then
  [ -S "$UDS_PATH" ] || fail "--uds: no socket at $UDS_PATH"
  [ -n "$(processes_naming envoy/envoy-uds.yaml)" ] || fail "--uds: Envoy does not run envoy/envoy-uds.yaml"
  [ -n "$(processes_naming "--grpc-uds $UDS_PATH")" ] || fail "--uds: ext-authz not serving $UDS_PATH"
  log "ok: --uds: Envoy runs envoy-uds.yaml, ext-authz serves $UDS_PATH"
fi

# The passwords printed once for the users created on this first run.
password_of() { awk -v email="$1" '$1 == email { print $2; exit }' "$out"; }
admin_pw=$(password_of demo@example.com)
user_pw=$(password_of user@example.com)
if [ -z "$admin_pw" ] || [ -z "$user_pw" ]; then fail "the demo users' passwords were not printed"; fi

# request METHOD PATH [curl args...]: sets $status and $body.
request() {
  local method=$1 path=$2
  shift 2
  body=$(curl -sS -o - -w '\n%{http_code}' -X "$method" "$@" "$LISTEN$path") || fail "curl $path failed"
  status=${body##*$'\n'}
  body=${body%$'\n'*}
}
expect() { # expect STATUS WHAT
  [ "$status" = "$1" ] || fail "$2: HTTP $status (want $1): $body"
  log "ok: $2 -> $1"
}

# 1. log in
request POST /login -u "demo@example.com:$admin_pw" -H 'Accept: text/plain'
expect 200 "POST /login (demo@example.com)"
token=$body
[[ "$token" =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]] || fail "not a JWT: $token"

# 2. protected route with the token: the echo shows the identity ext-authz added
request GET /hello -H "Authorization: Bearer $token"
expect 200 "GET /hello with the token"
grep -q '"x-auth-email": *"demo@example.com"' <<<"$body" || fail "no x-auth-email in the echo: $body"

# 3. no token
request GET /hello
expect 401 "GET /hello without a token"
grep -q '"error":"missing_token"' <<<"$body" || fail "not missing_token: $body"

# 3b. the same over HTTPS, trusting the development CA run.sh created: HTTP/2 (ALPN) and HSTS;
# plain HTTP carries no HSTS.
ca=$tmp/data/tls/ca.pem
[ -s "$ca" ] || fail "run.sh created no development CA at $ca"
tls_out=$(curl -sS --cacert "$ca" -D - -o /dev/null -w '%{http_version} %{http_code}' \
  -H "Authorization: Bearer $token" https://localhost:8443/hello) || fail "HTTPS request failed"
[[ "$tls_out" == *"2 200" ]] || fail "GET https://localhost:8443/hello: $tls_out"
grep -qi '^strict-transport-security: max-age=' <<<"$tls_out" || fail "no HSTS over HTTPS: $tls_out"
if curl -sS -D - -o /dev/null -H "Authorization: Bearer $token" "$LISTEN/hello" | grep -qi '^strict-transport-security'; then
  fail "HSTS on plain HTTP"
fi
log "ok: GET https://localhost:8443/hello (--cacert) -> HTTP/2 200 with HSTS"

# 4. /admin/ with a non-admin token
request POST /login -u "user@example.com:$user_pw" -H 'Accept: text/plain'
expect 200 "POST /login (user@example.com)"
request GET /admin/reports -H "Authorization: Bearer $body"
expect 403 "GET /admin/reports as a non-admin"

# 5. logout, then the token is refused at the edge (through the token-protected feed)
request POST /logout -H "Authorization: Bearer $token"
expect 204 "POST /logout"
# Generous: the feed is long-polled, so this normally takes well under a second; a tight bound
# would only measure how loaded the machine is.
deadline=$((SECONDS + 30))
while :; do
  request GET /hello -H "Authorization: Bearer $token"
  [ "$status" = 401 ] && break
  ((SECONDS < deadline)) || fail "token still accepted 30 s after logout: HTTP $status"
  sleep 0.1
done
grep -q '"message":"token revoked"' <<<"$body" || fail "not token revoked: $body"
log "ok: GET /hello after logout -> 401 token revoked"

# The feed is not open: without the generated token login-service answers 401.
feed_status=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:5000/revocations)
[ "$feed_status" = 401 ] || fail "GET /revocations without the feed token: HTTP $feed_status (want 401)"
log "ok: GET /revocations without the feed token -> 401"

# The feed token goes to ext-authz and login-service only, never to the stand-in application
# (demo-upstream) or Envoy: every process run.sh started is checked.
has_feed_token() { tr '\0' '\n' <"/proc/$1/environ" | grep -q '^REVOCATION_FEED_TOKEN='; }
with_token=()
children=$(children_of "$run_pid")
[ -n "$children" ] || fail "found no process under run.sh (pid $run_pid)"
for pid in $children; do
  name=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
  case $name in
    ext-authz | login-service)
      has_feed_token "$pid" || fail "$name lacks REVOCATION_FEED_TOKEN"
      with_token+=("$name")
      ;;
    *) if has_feed_token "$pid"; then fail "$name (pid $pid) inherited REVOCATION_FEED_TOKEN"; fi ;;
  esac
done
[ "${#with_token[@]}" = 2 ] || fail "expected ext-authz and login-service under run.sh, found: ${with_token[*]}"
log "ok: REVOCATION_FEED_TOKEN only in ext-authz and login-service"

# --- SIGTERM: run.sh stops everything it started ------------------------------------------------
kill -TERM "$run_pid"
set +e
wait "$run_pid"
exit_status=$?
set -e
run_pid=
[ "$exit_status" = 143 ] || fail "run.sh exited $exit_status after SIGTERM (want 143)"
for port in "${PORTS[@]}"; do
  if port_busy "$port"; then fail "port $port still in use after run.sh stopped"; fi
done
# ext-authz and login-service carry DATA_DIR in their arguments.
left=$(processes_naming "$tmp/data")
[ -z "$left" ] || fail "processes left after run.sh stopped: $left"
grep -q 'stopped' "$out" || fail "run.sh did not report stopping"
log "ok: SIGTERM -> exit 143, every port free, no process left"
log "passed"
