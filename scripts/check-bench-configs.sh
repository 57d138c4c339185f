#!/usr/bin/env bash
# Every Envoy configuration the repository can produce passes `envoy --mode validate`: the shipped
# ones and the Kubernetes one are checked by the e2e tests; this renders the bench-only configs
# (bench/render_envoy.py, as `make bench` does) with a throwaway key and validates each.
set -euo pipefail
cd "$(dirname "$0")/.."
envoy=$(scripts/envoy.sh --which)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -c 48 /dev/urandom | base64 -w0 >"$work/key"
python3 bench/render_envoy.py "$work/envoy" --secret-file "$work/key" --kid bench-1 \
  --uds "$work/ext-authz.sock" >/dev/null
count=0
for config in "$work"/envoy/*.yaml; do
  "$envoy" --mode validate -c "$config" >"$work/validate.log" 2>&1 ||
    { cat "$work/validate.log" >&2; echo "check-bench-configs: $(basename "$config") is invalid" >&2; exit 1; }
  count=$((count + 1))
done
((count >= 6)) || { echo "check-bench-configs: expected 6 rendered configs, got $count" >&2; exit 1; }
echo "check-bench-configs: $count bench Envoy configs valid"
