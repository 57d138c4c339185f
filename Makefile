# The two commands of the README's quick start, and the checks CI runs.
#   make run    install build deps, build and start the whole stack locally (Envoy on 127.0.0.1:8080)
#   make test   everything CI checks, installing what a fresh Debian machine lacks
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
export PATH := $(CURDIR)/.venv/bin:$(PATH)
CARGO ?= cargo

.PHONY: run test bootstrap lint build unit k8s envoy-configs envoy-check smoke bench bench-login fuzz soak clean

# scripts/run.sh runs scripts/bootstrap.sh (C compiler, libmariadb-dev, pkg-config, Envoy) before
# cargo, so this works as the first command on a fresh Debian machine.
run:
	./scripts/run.sh

bootstrap:
	./scripts/bootstrap.sh --test

lint: bootstrap
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	shellcheck -x scripts/*.sh .ci/run

# The e2e tests start the real binaries from target/debug, so build them before testing.
build: bootstrap
	$(CARGO) build --workspace --bins --locked

unit: build
	$(CARGO) test --workspace --locked --no-fail-fast

k8s: build
	./scripts/check-k8s.sh

# Every Envoy config is rendered by envoy/render.py from envoy/envoy.yaml.in. envoy-configs
# rewrites the committed ones (envoy/envoy.yaml, envoy/envoy-uds.yaml, the Kubernetes gateway's);
# envoy-check fails with a diff when one is stale and runs `envoy --mode validate` on every
# variant, the bench-only ones (rendered by make bench) included.
envoy-configs:
	python3 envoy/render.py

envoy-check: bootstrap
	python3 envoy/render.py --check

# The quick start as a newcomer meets it: scripts/run.sh (bootstrap, build, start), the
# walkthrough's requests, SIGTERM and cleanup. Fixed ports, like the e2e tests.
smoke: build
	./scripts/smoke-run.sh

test: lint unit k8s envoy-check smoke
	@echo "make test: all checks passed"

# Interleaved rounds through a real Envoy (no auth / jwt_authn / ext-authz TCP / UDS / shipped
# config), the gRPC load generator, login vs argon2, criterion; rewrites BENCHMARKS.md's tables.
bench:
	./scripts/bench.sh

# Login timing, real account (wrong password) vs unknown e-mail, medians over 200 attempts each
# on SQLite and MariaDB (TEST_MYSQL_URL): the enumeration-by-timing measurement in SECURITY.md.
bench-login:
	$(CARGO) build -p login-service --bin login-service --example login_timing --locked
	./target/debug/examples/login_timing

# Not part of `make test`: bounded, but minutes long and measuring rather than asserting alone.
fuzz: bootstrap
	./scripts/fuzz.sh          # FUZZ_SECONDS=60 per target, FUZZ_TARGETS=... to pick

soak: bootstrap
	./scripts/soak.sh          # SOAK_SECONDS=180, SOAK_WINDOW_SECONDS=15, SOAK_CLIENTS=8

clean:
	$(CARGO) clean
