#!/usr/bin/env bash
# `make bench` step, issue #15 §2b: many gateways following the revocation feed. One login-service
# on a fresh MariaDB database, connecting as a MariaDB account of its own so that its statements
# are counted apart from every other client of the server (`userstat=ON` for the run, restored
# after); then `bench feed-followers` holds K long polls (K = 1, then 500), each re-polling with its
# cursor as ext-authz does, and prints JSON lines on stdout: idle database statements/s and
# login-service CPU per K, then logout → seen by the K-th follower (p50/p99).
#
#   scripts/bench-feed.sh [--no-build] [--quick]
#
# Environment: FEED_FOLLOWERS=1,500 FEED_WINDOW=20 (s per idle window) FEED_WAIT=8 (each poll's
#              wait) FEED_LOGOUTS=50 FEED_LABEL=after
#              LOGIN_BIN=target/release/login-service (e.g. main's build, for "before")
#              MYSQL_ARGS="-h 127.0.0.1 -P 3306 -u root" (an account that may create databases,
#              users and SET GLOBAL userstat) PORT_OFFSET=10000 (listens on 5030 + offset)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

bench_options bench-feed 2,15 "$@"
$quick && : "${FEED_WINDOW:=6}" "${FEED_LOGOUTS:=20}"
FEED_FOLLOWERS=${FEED_FOLLOWERS:-1,500} FEED_WINDOW=${FEED_WINDOW:-20} FEED_WAIT=${FEED_WAIT:-8}
FEED_LOGOUTS=${FEED_LOGOUTS:-50} FEED_LABEL=${FEED_LABEL:-after}
LOGIN_BIN=${LOGIN_BIN:-$ROOT/target/release/login-service}
MYSQL_ARGS=${MYSQL_ARGS:--h 127.0.0.1 -P 3306 -u root}
PORT_OFFSET=${PORT_OFFSET:-10000}
P_LOGIN=$((5030 + PORT_OFFSET))
log() { printf '\033[1mbench-feed:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1mbench-feed: error:\033[0m %s\n' "$*" >&2; exit 1; }
port_busy "$P_LOGIN" && die "port $P_LOGIN is in use"
command -v mysql >/dev/null || die "the mysql client is required (apt-get install mariadb-client)"
# shellcheck disable=SC2086 # MYSQL_ARGS is a list of options
sql() { mysql $MYSQL_ARGS -N -B -e "$1"; }
sql 'SELECT 1' >/dev/null || die "MariaDB is not reachable with: mysql $MYSQL_ARGS"

if $build; then
  cargo build --release --locked -p login-service -p bench
fi
BENCH=$ROOT/target/release/bench
[ -x "$LOGIN_BIN" ] || die "$LOGIN_BIN is missing: run without --no-build"
# K followers hold K sockets here and K in login-service (which inherits this limit).
want=$(($(echo "$FEED_FOLLOWERS" | tr ',' '\n' | sort -n | tail -1) * 2 + 256))
if (($(ulimit -n) < want)); then
  ulimit -n "$want" 2>/dev/null || die "ulimit -n is $(ulimit -n), $want needed (hard limit $(ulimit -Hn))"
fi

WORK=$(mktemp -d /tmp/edge-auth-bench-feed.XXXXXX)
mkdir -p "$WORK/keys"
umask 077
head -c 36 /dev/urandom | base64 -w0 >"$WORK/keys/bench"
umask 022
NAME=bench_feed_$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
DB_PW=$(head -c 18 /dev/urandom | base64 -w0 | tr '+/' '-_')
OLD_USERSTAT=$(sql "SELECT @@GLOBAL.userstat")
login_pid=
cleanup() {
  local status=$?
  [ -n "$login_pid" ] && stop_pids 5 "$login_pid"
  sql "DROP DATABASE IF EXISTS \`$NAME\`; DROP USER IF EXISTS '$NAME'@'%'" >/dev/null 2>&1 || true
  sql "SET GLOBAL userstat = $OLD_USERSTAT" >/dev/null 2>&1 || true
  if ((status == 0)); then rm -rf "$WORK"; else log "logs kept in $WORK"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sql "CREATE DATABASE \`$NAME\`; CREATE USER '$NAME'@'%' IDENTIFIED BY '$DB_PW'; \
     GRANT ALL ON \`$NAME\`.* TO '$NAME'@'%'; SET GLOBAL userstat = ON"
host_port=$(echo "$MYSQL_ARGS" | awk '{for (i = 1; i < NF; i++) { if ($i == "-h") h = $(i + 1); if ($i == "-P") p = $(i + 1) }} END { print (h ? h : "127.0.0.1") ":" (p ? p : 3306) }')
export DATABASE_URL="mysql://$NAME:$DB_PW@$host_port/$NAME"
export KEYS_DIR=$WORK/keys RUST_LOG=${RUST_LOG:-info}
unset JWT_SECRET JWT_DEFAULT_KID JWT_SIGNING_KID
"$LOGIN_BIN" migrate >"$WORK/admin.log" 2>&1 || die "migrate failed: $(tail -3 "$WORK/admin.log")"
PASSWORD=$(head -c 18 /dev/urandom | base64 -w0 | tr '+/' '-_')
printf '%s\n' "$PASSWORD" | "$LOGIN_BIN" user add feed@example.com --password-stdin >>"$WORK/admin.log" 2>&1
# MAX_REVOKED_PER_USER: every logout of the run is one per-token row, as in a fleet of users.
# FEED_MAX_WAITERS(_PER_PEER): room for every simulated follower, all from this one address.
MAX_REVOKED_PER_USER=100000 FEED_MAX_WAITERS=$want FEED_MAX_WAITERS_PER_PEER=$want "$LOGIN_BIN" serve --http-addr "127.0.0.1:$P_LOGIN" >"$WORK/login-service.log" 2>&1 &
login_pid=$!
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$P_LOGIN/readyz" >/dev/null 2>&1 && break
  kill -0 "$login_pid" 2>/dev/null || die "login-service exited; see $WORK/login-service.log"
  sleep 0.1
done
log "$FEED_LABEL: followers $FEED_FOLLOWERS, ${FEED_WINDOW}s idle windows, $FEED_LOGOUTS logouts"
# shellcheck disable=SC2086
BENCH_PASSWORD=$PASSWORD "$BENCH" feed-followers --url "http://127.0.0.1:$P_LOGIN" \
  --server-pid "$login_pid" --followers "$FEED_FOLLOWERS" --window "$FEED_WINDOW" --wait "$FEED_WAIT" \
  --logouts "$FEED_LOGOUTS" --email feed@example.com --db-user "$NAME" --mysql-args="$MYSQL_ARGS" \
  --label "$FEED_LABEL"
