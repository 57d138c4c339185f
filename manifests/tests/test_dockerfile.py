"""The Dockerfile and .dockerignore agree with the workspace and the manifests.

`make test` needs no container engine: hadolint (scripts/check-k8s.sh) lints the Dockerfile;
these tests check what it cannot (`make image-test`, manifests/image_test, builds and runs it): every binary the manifests run is built and copied, the build context holds what
the build needs and none of the local secrets, the runtime UID is the one the pods run as.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib

import yaml

from conftest import MANIFESTS, OUR_BINARIES, REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
IGNORE = [l.strip() for l in (REPO / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
WORKSPACE = tomllib.loads((REPO / "Cargo.toml").read_text())


def ignored(path: str) -> bool:
    """Enough of Docker's .dockerignore matching for directory and glob patterns (no `!`)."""
    assert not any(p.startswith("!") for p in IGNORE), "update ignored() for exception patterns"
    for pattern in IGNORE:
        pat = pattern.rstrip("/")
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatch(prefix, pat) or (pat.startswith("**/") and fnmatch.fnmatch(parts[i - 1], pat[3:])):
                return True
    return False


def command(prefix: str) -> str:
    """One RUN command starting at `prefix`, with its backslash-continued lines."""
    return re.search(re.escape(prefix) + r"(?:[^\n\\]|\\\n)*", DOCKERFILE).group(0)


def stages() -> list[tuple[str, str]]:
    return re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", DOCKERFILE, re.M | re.I)


def test_release_build_of_every_binary_the_manifests_run():
    build = command("cargo build --release")
    for name in OUR_BINARIES:
        assert f"--bin {name}" in build
        assert f"/src/target/release/{name}" in DOCKERFILE


def test_dependency_layer_before_source_layer():
    cook = DOCKERFILE.index("cargo chef cook")
    copy_src = DOCKERFILE.index("COPY . .", DOCKERFILE.index("FROM chef AS builder"))
    build = DOCKERFILE.index("cargo build --release")
    assert cook < copy_src < build
    assert "--locked" in DOCKERFILE[cook:DOCKERFILE.index("\n", cook) + 80]


def test_build_context_has_the_workspace_and_no_secrets():
    for member in WORKSPACE["workspace"]["members"]:
        assert not ignored(f"{member}/Cargo.toml"), member
        assert not ignored(f"{member}/src/main.rs"), member
    for needed in ("Cargo.toml", "Cargo.lock", "migrations/mysql/x/up.sql", "migrations/sqlite/x/up.sql"):
        assert not ignored(needed), needed
    for secret_or_junk in ("manifests/overlays/minikube/secrets/jwt-keys.env", "target/debug/ext-authz",
                           ".venv/bin/python", ".git/config", ".data/login.sqlite"):
        assert ignored(secret_or_junk), secret_or_junk


def test_toolchain_is_at_least_the_workspace_msrv():
    rust = next(image for image, _ in stages() if image.startswith("rust:"))
    tag = re.match(r"rust:(\d+)\.(\d+)", rust)
    msrv = tuple(int(x) for x in WORKSPACE["workspace"]["package"]["rust-version"].split(".")[:2])
    assert (int(tag.group(1)), int(tag.group(2))) >= msrv
    assert rust.endswith("-bookworm"), "builder and runtime must share the Debian release (glibc, libmariadb)"


def test_runtime_is_bookworm_slim_nonroot_matching_the_pods():
    image, name = stages()[-1]
    assert image == "debian:bookworm-slim" and name == "runtime"
    runtime = DOCKERFILE[DOCKERFILE.index("FROM debian:bookworm-slim"):]
    user = re.search(r"^USER\s+(\d+):(\d+)\s*$", runtime, re.M)
    assert user, "USER must be numeric so runAsNonRoot can verify it"
    uid = int(user.group(1))
    assert uid != 0
    base = MANIFESTS / "base"
    for path in ("login-service/deployment.yaml", "gateway/deployment.yaml", "login-service/migrate-job.yaml"):
        spec = yaml.safe_load((base / path).read_text())["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsUser"] == uid, path
    assert "libmariadb3" in runtime and "ca-certificates" in runtime
    assert "rm -rf /var/lib/apt/lists/*" in runtime


def test_source_layer_builds_exactly_the_packages_the_dependency_layer_cooked():
    """Found by the first real build (issue #19): `cargo build --bin ...` without `-p` resolves
    features across the WHOLE workspace (e2e, bench: rustls, quinn, rsa, hdrhistogram...), while
    `cargo chef cook -p ...` cooked only the three services' dependency graph, so the source layer
    downloaded and recompiled dozens of dependencies on every source change, and the release
    binaries carried features only the test crates asked for. Same package selection in both."""
    def packages(line: str) -> set[str]:
        return set(re.findall(r"-p\s+(\S+)", line))
    cook, build = command("cargo chef cook"), command("cargo build --release")
    assert packages(cook) == set(OUR_BINARIES), cook
    assert packages(build) == packages(cook), f"build selects {packages(build)}, cook cooked {packages(cook)}"
