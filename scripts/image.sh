#!/usr/bin/env bash
# The container image, built and run for real (issue #19).
#
#   scripts/image.sh build   `make image`: the shipped Dockerfile, unchanged, tagged $IMAGE
#                            (default edge-auth:dev) with docker or podman; prints time and size
#   scripts/image.sh test    `make image-test`: manifests/image_test with podman (minutes, not part
#                            of `make test`): the image's contents, each binary hardened as the
#                            manifests run it, then the minikube overlay's gateway, login-service
#                            and demo upstream as one pod and the README's walkthrough against it
#
# Engine: $CONTAINER_ENGINE if set, else docker when its daemon answers, else podman. A docker
# CLI without a running daemon is skipped, not an error. The base images are pulled as usual;
# `test` needs podman (pods). It publishes only ports podman picks on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-edge-auth:dev}

log() { printf '\033[1mimage:\033[0m %s\n' "$*" >&2; }

engine() {
  if [[ -n "${CONTAINER_ENGINE:-}" ]]; then
    echo "$CONTAINER_ENGINE"
  elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null && podman info >/dev/null 2>&1; then
    echo podman
  else
    log "no container engine: neither a docker daemon nor podman answers (set CONTAINER_ENGINE)"
    exit 1
  fi
}

case "${1:-}" in
  build)
    eng=$(engine)
    log "$eng build -t $IMAGE . (the first build takes minutes: cargo-chef dependency layer, then the sources)"
    start=$SECONDS
    "$eng" build -t "$IMAGE" .
    size=$("$eng" image inspect --format '{{.Size}}' "$IMAGE")
    log "built $IMAGE with $eng in $((SECONDS - start)) s, $((size / 1000000)) MB"
    ;;
  test)
    eng=$(engine)
    [[ "$eng" == podman ]] || { log "image-test runs the gateway as a podman pod: it needs podman (found $eng)"; exit 1; }
    "$eng" image exists "$IMAGE" || { log "no image $IMAGE: run make image first"; exit 1; }
    # The pinned pytest, PyYAML and kubectl (kustomize) that make k8s uses.
    ./scripts/check-k8s.sh --tools-only
    PODMAN="$eng" IMAGE="$IMAGE" PYTHONDONTWRITEBYTECODE=1 PATH="$PWD/.venv/bin:$PATH" \
      .venv/bin/pytest -q -p no:cacheprovider manifests/image_test
    ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 64
    ;;
esac
