# syntax=docker/dockerfile:1
#
# One image, three binaries: ext-authz, login-service, demo-upstream (the pod's `command` picks
# one). They share the workspace, the dependency graph and the runtime libraries, so one build and
# one image to scan, sign and promote is simpler than three that always move together; the extra
# binaries cost a few MB and cannot run unless named.
#
# Stages
#   chef     Rust toolchain + cargo-chef + the MariaDB client headers (diesel's mysql backend).
#   planner  turns the workspace manifests into recipe.json (dependencies only).
#   builder  cooks the recipe (dependency layer: rebuilt only when Cargo.toml/Cargo.lock change),
#            then copies the sources and builds the three release binaries.
#   runtime  debian:bookworm-slim + libmariadb3 + ca-certificates, non-root numeric UID.
#
# Why cargo-chef and not hand-written stub crates: the workspace has benches, integration tests
# and five members; cargo-chef derives the skeleton from the manifests, so adding a member or a
# target never breaks the cache layer. It is installed from crates.io, pinned and --locked.
#
# Why bookworm-slim and not distroless/cc: login-service links libmariadb.so.3 dynamically
# (mysqlclient-sys via pkg-config), which pulls libssl3, zlib and the client auth plugins.
# Installing the Debian package keeps those dependencies complete and visible to image scanners
# (dpkg status); copying .so files into distroless hides them from scanners and breaks silently
# when a dependency is missed. The price is a shell in the image; the pods run it with a
# read-only root filesystem, no capabilities, no privilege escalation and a non-root UID.

FROM rust:1.95-bookworm AS chef
# DL3008: the Debian snapshot is fixed by the base image tag; pinning apt versions breaks the
# build whenever the security archive moves on, which is exactly when we want the rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmariadb-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --version 0.1.78 --locked \
 && rm -rf "$CARGO_HOME/registry"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependency layer: cached until recipe.json (i.e. a manifest or the lock file) changes.
RUN cargo chef cook --release --locked --recipe-path recipe.json \
      -p ext-authz -p login-service -p demo-upstream
# Source layer. migrations/ is embedded into login-service at compile time (embed_migrations!).
# The same -p selection as the cook: without it cargo resolves features across the whole
# workspace (e2e, bench), rebuilds dozens of dependencies here on every source change and links
# features into the binaries that only the test crates asked for (found by the first real build).
COPY . .
RUN cargo build --release --locked -p ext-authz -p login-service -p demo-upstream \
      --bin ext-authz --bin login-service --bin demo-upstream

FROM debian:bookworm-slim AS runtime
# libmariadb3: the MySQL/MariaDB client library login-service links against; ca-certificates:
# TLS to a managed database. Nothing else. DL3008: see the builder stage.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libmariadb3 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder \
     /src/target/release/ext-authz \
     /src/target/release/login-service \
     /src/target/release/demo-upstream \
     /usr/local/bin/
LABEL org.opencontainers.image.title="edge-auth" \
      org.opencontainers.image.description="ext-authz, login-service and demo-upstream (select with the command)" \
      org.opencontainers.image.licenses="Apache-2.0"
# 65532 = the conventional "nonroot" UID/GID; numeric so runAsNonRoot can verify it.
USER 65532:65532
# login-service 5000, ext-authz gRPC 9001 + metrics 9002, demo-upstream 8000.
EXPOSE 5000 8000 9001 9002
CMD ["login-service", "serve"]
