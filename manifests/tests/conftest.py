"""Fixtures for the manifest tests: rendered overlays and the binaries' --help.

Rendering: `scripts/check-k8s.sh` renders every overlay once (with throwaway secrets) into
$EDGE_AUTH_RENDERED_DIR/<overlay>.yaml and points the tests at it. Run alone
(`.venv/bin/pytest manifests/tests`), the tests copy manifests/ to a temporary directory,
generate throwaway secrets there with scripts/gen-secrets.sh and render with `kubectl kustomize`,
so the developer's own secrets are never read or touched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
BIN_DIR = Path(os.environ.get("EDGE_AUTH_BIN_DIR", REPO / "target" / "debug"))
OUR_BINARIES = ("ext-authz", "login-service", "demo-upstream")
THROWAWAY_DATABASE_URL = "mysql://auth_user:throwaway@db.example.invalid:3306/auth"


def render_all(out_dir: Path) -> None:
    """Copies manifests/, fills in throwaway secrets and renders each overlay to out_dir."""
    work = out_dir / "src"
    shutil.copytree(MANIFESTS, work / "manifests", ignore=shutil.ignore_patterns("secrets", "tests"))
    env = dict(os.environ, DATABASE_URL=THROWAWAY_DATABASE_URL)
    subprocess.run(
        [str(REPO / "scripts" / "gen-secrets.sh"), "--manifests", str(work / "manifests"), *OVERLAYS],
        check=True, env=env, capture_output=True,
    )
    for overlay in OVERLAYS:
        rendered = subprocess.run(
            ["kubectl", "kustomize", str(work / "manifests" / "overlays" / overlay)],
            check=True, capture_output=True, text=True,
        ).stdout
        (out_dir / f"{overlay}.yaml").write_text(rendered)


@dataclass
class Rendered:
    """The objects of one rendered overlay."""

    overlay: str
    docs: list[dict]
    text: str = field(repr=False)

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def has(self, kind: str, name: str) -> bool:
        return any(d["metadata"]["name"] == name for d in self.of_kind(kind))

    def workloads(self) -> list[dict]:
        return [d for d in self.docs if d["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet")]


@pytest.fixture(scope="session")
def rendered_dir(tmp_path_factory) -> Path:
    given = os.environ.get("EDGE_AUTH_RENDERED_DIR")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("rendered")
    render_all(out)
    return out


@pytest.fixture(scope="session")
def overlays(rendered_dir) -> dict[str, Rendered]:
    result = {}
    for overlay in OVERLAYS:
        path = rendered_dir / f"{overlay}.yaml"
        text = path.read_text()
        result[overlay] = Rendered(overlay, [d for d in yaml.safe_load_all(text) if d], text)
    return result


# ---- the binaries' interface, from clap's --help -------------------------------------------------

FLAG_RE = re.compile(r"(?:^|[\s,])(--[a-z0-9][a-z0-9-]*)")
ENV_RE = re.compile(r"\[env: ([A-Z0-9_]+)[=\]]")
DEFAULT_RE = re.compile(r"\[default: ([^\]]+)\]")


@dataclass
class CliSpec:
    """What one (sub)command accepts: long flags, env vars, and each env var's default."""

    flags: set[str]
    envs: set[str]
    defaults: dict[str, str]  # env name -> default value, when clap prints one


def parse_help(text: str) -> CliSpec:
    flags, envs, defaults = set(), set(), {}
    # An option's description may wrap onto following lines: join each option's block.
    blocks, current = [], ""
    for line in text.splitlines():
        if re.match(r"^\s{2,}(-[a-zA-Z], )?--", line) or re.match(r"^\S", line):
            if current:
                blocks.append(current)
            current = line
        else:
            current += " " + line.strip()
    if current:
        blocks.append(current)
    for block in blocks:
        m = re.match(r"^\s+(?:-[a-zA-Z], )?(--[a-z0-9][a-z0-9-]*)", block)
        if not m:
            continue
        flags.add(m.group(1))
        env = ENV_RE.search(block)
        if env:
            envs.add(env.group(1))
            default = DEFAULT_RE.search(block)
            if default:
                defaults[env.group(1)] = default.group(1)
    return CliSpec(flags, envs, defaults)


def binary(name: str) -> Path:
    path = BIN_DIR / name
    if not path.is_file():
        pytest.fail(f"{path} does not exist: build it first (cargo build --workspace --bins --locked)")
    return path


_help_cache: dict[tuple, CliSpec] = {}


def cli_spec(name: str, subcommands: tuple[str, ...]) -> CliSpec:
    """What `name SUBCOMMANDS... --help` lists (clap shows global args in every subcommand)."""
    key = (name, subcommands)
    if key not in _help_cache:
        spec = CliSpec(set(), set(), {})
        for argv in (subcommands,):
            proc = subprocess.run([str(binary(name)), *argv, "--help"], capture_output=True, text=True, timeout=30)
            assert proc.returncode == 0, f"`{name} {' '.join(argv)} --help` failed: {proc.stderr.strip()}"
            part = parse_help(proc.stdout)
            spec.flags |= part.flags
            spec.envs |= part.envs
            spec.defaults.update(part.defaults)
        _help_cache[key] = spec
    return _help_cache[key]
