#!/usr/bin/env bash
# make soak: a bounded soak through the real Envoy with release builds.
#
#   SOAK_SECONDS=180        how long the constant load runs
#   SOAK_WINDOW_SECONDS=15  report window (throughput, p50/p99/max, errors, RSS per service)
#   SOAK_CLIENTS=8          concurrent keep-alive clients
#
# Starts the same stack as the e2e tests (shipped envoy/envoy.yaml, fixed ports 8080, 9901, 9001,
# 9002, 5000, 8000, 8001: stop `make run` first) from target/release, drives it with the Rust
# driver e2e/examples/soak.rs, and fails on any error, on an upstream hit that was not a
# valid-token 200, or on RSS growth over the last two thirds of the run (> 10 % and > 8 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

command -v envoy >/dev/null || ./scripts/bootstrap.sh --test
cargo build --release --locked --bins
cargo build --release --locked -p e2e --example soak
exec target/release/examples/soak
