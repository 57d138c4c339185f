# The two commands of the README's quick start, and the checks CI runs.
#   make run    install build deps, build and start the whole stack locally (Envoy on 127.0.0.1:8080)
#   make test   everything CI checks, installing what a fresh Debian machine lacks
#   make help   every target with one line (the `## ` comment on its target line)
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
export PATH := $(CURDIR)/.venv/bin:$(PATH)
CARGO ?= cargo
# `make` alone starts the stack, as the README's quick start says.
.DEFAULT_GOAL := run

.PHONY: run help test bootstrap lint build unit k8s envoy-configs envoy-check smoke bench bench-cache bench-shipped bench-login fuzz soak image image-test clean

# scripts/run.sh runs scripts/bootstrap.sh (C compiler, libmariadb-dev, pkg-config, Envoy) before
# cargo, so this works as the first command on a fresh Debian machine.
run: ## build and start the whole stack locally (Envoy on 127.0.0.1:8080); EDDSA=1: Ed25519 tokens, public key only at the gateway
	./scripts/run.sh $(if $(EDDSA),--eddsa)

bootstrap: ## install what a fresh Debian machine lacks for the tests (compiler, MariaDB client, Envoy)
	./scripts/bootstrap.sh --test

# fuzz/ is outside the workspace (cargo-fuzz): lint compiles its targets on stable too, so a
# change to the sources they include by path cannot break them unnoticed.
lint: bootstrap ## cargo fmt --check, clippy -D warnings (workspace and fuzz/), shellcheck
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --check
	$(CARGO) clippy --manifest-path fuzz/Cargo.toml --all-targets --locked -- -D warnings
	shellcheck -x scripts/*.sh .ci/run

# The e2e tests start the real binaries from target/debug, so build them before testing.
build: bootstrap ## build every binary (debug), as the e2e tests start them
	$(CARGO) build --workspace --bins --locked

# fuzz/ is outside the workspace: its targets' bodies also run on stable over the committed
# seed corpus (fuzz/seeds/, and fuzz/corpus/ when `make fuzz` left one), as regression tests.
unit: build ## cargo test for the whole workspace (unit, integration and e2e tests); fuzz seed replay; bench chart tests
	$(CARGO) test --workspace --locked --no-fail-fast
	$(CARGO) test --manifest-path fuzz/Cargo.toml --lib --locked
	python3 -m unittest discover -s bench -p 'test_*.py'

k8s: build ## check the Kubernetes manifests and the gateway they describe
	./scripts/check-k8s.sh

# Every Envoy config is rendered by envoy/render.py from envoy/envoy.yaml.in. envoy-configs
# rewrites the committed ones (envoy/envoy.yaml, envoy/envoy-uds.yaml, the Kubernetes gateway's);
# envoy-check fails with a diff when one is stale and runs `envoy --mode validate` on every
# variant, the bench-only ones (rendered by make bench) included.
envoy-configs: ## re-render the committed Envoy configs from envoy/envoy.yaml.in
	python3 envoy/render.py

envoy-check: bootstrap ## fail when a committed Envoy config is stale; validate every variant
	python3 envoy/render.py --check

# The quick start as a newcomer meets it: scripts/run.sh (bootstrap, build, start), the
# walkthrough's requests, SIGTERM and cleanup. Fixed ports, like the e2e tests.
smoke: build ## the quick start as a newcomer meets it: make run (TCP and --uds), requests, SIGTERM, cleanup
	./scripts/smoke-run.sh
	./scripts/smoke-run.sh --uds

test: lint unit k8s envoy-check smoke ## everything CI checks
	@echo "make test: all checks passed"

# Interleaved rounds through a real Envoy (no auth / jwt_authn / ext-authz TCP / UDS / shipped
# config), the gRPC load generator, login vs argon2, criterion; rewrites BENCHMARKS.md's tables.
bench: ## measure Envoy jwt_authn vs ext-authz, gRPC load, login vs argon2, traces on/off; rewrite BENCHMARKS.md
	./scripts/bench.sh
	./scripts/bench-traces.sh --no-build

# The verified-token cache in process (no servers): instructions per check under callgrind
# (load-independent) and criterion times, HS256/EdDSA/RS256 without the cache, hit and miss.
bench-cache: ## token cache: instructions per check (callgrind) and criterion, by algorithm
	./scripts/bench-cache.sh

# The shipped Envoy config's cost one part at a time (issue #15 §4): (c), (e) and (c) + each part
# (envoy/render.py EDGE_FLAGS), Envoy CPU per request in interleaved rounds (~5 min).
bench-shipped: ## Envoy CPU per request of each part of the shipped config over the lean (c)
	./scripts/bench-shipped.sh

# Login timing, real account (wrong password) vs unknown e-mail, medians over 200 attempts each
# on SQLite and MariaDB (TEST_MYSQL_URL): the enumeration-by-timing measurement in SECURITY.md.
bench-login: ## login timing, real account vs unknown e-mail (SQLite and MariaDB)
	$(CARGO) build -p login-service --bin login-service --example login_timing --locked
	./target/debug/examples/login_timing

# Not part of `make test`: bounded, but minutes long and measuring rather than asserting alone.
fuzz: bootstrap ## run the cargo-fuzz targets for a bounded time (nightly)
	./scripts/fuzz.sh          # FUZZ_SECONDS=60 per target, FUZZ_TARGETS=... to pick

soak: bootstrap ## minutes of steady load through the stack, watching memory and errors
	./scripts/soak.sh          # SOAK_SECONDS=180, SOAK_WINDOW_SECONDS=15, SOAK_CLIENTS=8

# The container image, built and run for real (issue #19). Not part of `make test`: the first
# build takes minutes on 2 cores, the test starts a podman pod. manifests/README.md "Building and
# trying the image without a cluster".
image: ## build the container image edge-auth:dev (docker or podman, whichever runs)
	./scripts/image.sh build

image-test: image ## run the image as the manifests do: contents, hardening, the gateway pod in podman, the README walkthrough
	./scripts/image.sh test

clean: ## cargo clean
	$(CARGO) clean

# Lists the targets from the `## ` comments on their own lines, so the list cannot drift from the
# Makefile; a target without one is listed as undocumented.
help: ## list every target with one line
	@awk -F':' '/^[a-zA-Z][a-zA-Z0-9_-]*:([^=]|$$)/ { \
	  desc = "(undocumented)"; if (index($$0, "## ")) desc = substr($$0, index($$0, "## ") + 3); \
	  printf "  make %-14s %s\n", $$1, desc }' $(firstword $(MAKEFILE_LIST))
