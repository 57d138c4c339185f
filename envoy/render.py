#!/usr/bin/env python3
"""Renders every Envoy config of the repository from the one source, envoy/envoy.yaml.in.

    python3 envoy/render.py            # rewrite the committed variants (`make envoy-configs`)
    python3 envoy/render.py --check    # exit 1 with a diff when a committed variant is stale,
                                       # and `envoy --mode validate` every variant (`make test`)
    python3 envoy/render.py --bench OUT_DIR --secret-file FILE --kid KID --uds PATH \\
                            [--port-offset 10000]   # BENCHMARKS.md's configs (`make bench`)

Committed (users read them, `make run`, the e2e tests and kustomize consume them as files):
  local       envoy/envoy.yaml                   ext-authz over TCP 127.0.0.1:9001
  uds         envoy/envoy-uds.yaml               ext-authz over /tmp/edge-auth/ext-authz.sock
  kubernetes  manifests/base/gateway/envoy.yaml  listener on the pod IP, ext-authz on the pod's
                                                 shared socket, Services by DNS, readiness listener
Also committed: the HTTPS certificate's SDS resource (SDS below), as envoy/tls-sds.yaml and
manifests/base/gateway/tls-sds.yaml; Envoy reads it as tls/sds.yaml in its working directory.
Bench (rendered at bench time, never committed: the HMAC key is random per run):
  a-noauth.yaml                    lean: one listener, one route, no access log, no auth filter
  b-jwt_authn.yaml                 lean + Envoy's native jwt_authn, the same HS256 key inline
  c-ext_authz_tcp.yaml             lean + ext_authz over TCP (every header sent)
  c2-ext_authz_tcp_allowlist.yaml  (c) + `allowed_headers`: only what ext-authz reads is sent
  d-ext_authz_uds.yaml             lean + ext_authz over the Unix socket --uds
  e-shipped.yaml                   the local variant with every port + offset
  f-jwt_authn_eddsa.yaml           with --eddsa-jwks FILE only: (b) with that public JWKS (EdDSA)
  c+FLAG.yaml                      with --shipped-diffs only: (c) plus one part of the shipped
                                   config (EDGE_FLAGS), ports offset+8090.., admin offset+9910..
Ports: shipped N -> N + offset (8080 -> 18080, 9901 -> 19901, 9001 -> 19001, 5000 -> 15000,
8000 -> 18000); the lean configs listen on 18081-18085 with admin 19902-19906 (in the order
above), so a `make run` stack on the default ports can stay up during a bench run.

Standard library only (no YAML library: the rendered files keep the source's comments, and
`make envoy-configs` must work right after scripts/bootstrap.sh). The template syntax is
described at the top of envoy/envoy.yaml.in.
"""

from __future__ import annotations

import argparse
import base64
import difflib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "envoy" / "envoy.yaml.in"
SOURCE_NAME = "envoy/envoy.yaml.in"
# What the shipped configs add to the lean bench shape, one flag per separately measurable part
# (BENCHMARKS.md "The shipped config's cost"): every shipped variant sets all of them, the lean
# bench configs none, and `--bench --shipped-diffs` renders (c) plus each one alone.
EDGE_FLAGS = {
    "overload": "overload manager: a cap on open downstream connections",
    "tls": "the HTTPS address and its TLS filter chain",
    "hcm_headers": "no server banner, x-request-id on every answer",
    "hcm_limits": "header size and timeouts, stream idle timeout, HTTP/2 limits",
    "local_reply": "JSON bodies for Envoy's own answers",
    "access_log": "the access log",
    "hsts": "the HSTS response header (HTTPS only)",
    "header_hygiene": "client headers removed before any upstream",
    "routes": "the full route table (refused paths, login, admin, .well-known, logout)",
    "edge_filters": "the login body bound and rate limit (buffer, local_ratelimit filters)",
}
FLAGS = frozenset({"lean", "ext_authz", "allowed_headers", "jwt_authn", "kubernetes",
                   "identity_limit", "external_issuers", "tracing", *EDGE_FLAGS})
SHIPPED_FLAGS = frozenset({"ext_authz", "allowed_headers", *EDGE_FLAGS})
SHIPPED_PORTS = {"listen": 8080, "tls": 8443, "admin": 9901, "authz": 9001, "login": 5000,
                 "upstream": 8000}
LOCAL_UDS = "/tmp/edge-auth/ext-authz.sock"  # scripts/run.sh --uds, the e2e harness
K8S_UDS = "/sockets/ext-authz.sock"  # the gateway pod's shared emptyDir
K8S_NAMESPACE = "edge-auth"
# The HTTPS listener's certificate, as a file-based SDS resource. Envoy reads it as tls/sds.yaml
# relative to its working directory (scripts/run.sh: DATA_DIR; the e2e stack: its scratch dir;
# Kubernetes: /etc/envoy, where tls/ is the mounted Secret plus this file), and watches tls/: a
# new tls.crt/tls.key moved in, or a Secret's `..data` symlink swapped, is reloaded in place.
SDS_FILES = (REPO / "envoy" / "tls-sds.yaml", REPO / "manifests" / "base" / "gateway" / "tls-sds.yaml")
SDS = f"""\
# Generated by envoy/render.py (SDS in that file); `make envoy-configs` rewrites it.
# The edge's server certificate for Envoy's file-based SDS (envoy/README.md "TLS"). Paths are
# relative to Envoy's working directory; watched_directory makes Envoy re-read the pair (checked
# to match) whenever a file is moved into tls/, so a rotation needs no restart.
resources:
  - "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
    name: edge_server_cert
    tls_certificate:
      certificate_chain: {{ filename: tls/tls.crt }}
      private_key: {{ filename: tls/tls.key }}
      watched_directory: {{ path: tls }}
"""

# Rate limits and the client-address model, per deployment (envoy/README.md "Rate limits",
# "Client addresses"). Token buckets refill every second: `*_refill` tokens a second up to
# `*_burst`. The login buckets are per Envoy replica; the authoritative, shared counters are
# login-service's lockout in the database.
LIMITS = {
    # Load balancers in front of Envoy that append to x-forwarded-for and are trusted to.
    "xff_trusted_hops": "0",
    # POST /login per client address, and for the whole Envoy.
    "login_address_burst": "100",
    "login_address_refill": "50",
    "login_global_burst": "1000",
    "login_global_refill": "500",
    # Per-address buckets kept (least recently used evicted): bounds Envoy's memory.
    "login_max_addresses": "10000",
    # The optional per-identity limit (flag identity_limit) on protected routes.
    "identity_burst": "100",
    "identity_refill": "50",
    "identity_max_users": "10000",
}
# The optional example routes that accept external OIDC issuers (flag external_issuers, never in
# a committed file): the `issuers` context extension of /sso and /sso/admin, i.e. the issuer
# names of ext-authz's --oidc-issuer / --issuers-file plus `local` for our own tokens.
EXTERNAL_ISSUERS = {"external_issuers": "local,sso"}
GENERATED = (f"# Generated by envoy/render.py from {SOURCE_NAME}; edit the source and run "
             "`make envoy-configs`.\n")


@dataclass(frozen=True)
class Variant:
    name: str
    header: str
    flags: frozenset[str]
    values: dict[str, str] = field(hash=False)
    path: Path | None = None  # committed file, or None for a bench config


def tcp(port: int) -> str:
    return f"socket_address: {{ address: 127.0.0.1, port_value: {port} }}"


def pipe(path: str) -> str:
    return f"pipe: {{ path: {path} }}"


def shipped_values(offset: int = 0) -> dict[str, str]:
    """The local variant's values: everything on loopback, ports + offset."""
    p = {k: v + offset for k, v in SHIPPED_PORTS.items()}
    return {
        "admin_port": str(p["admin"]),
        "listen_address": "127.0.0.1",
        "listen_port": str(p["listen"]),
        "tls_port": str(p["tls"]),
        "route_config_name": "local_routes",
        "ext_authz_address": tcp(p["authz"]),
        "service_cluster_type": "STATIC",
        "login_address": "127.0.0.1",
        "login_port": str(p["login"]),
        "upstream_address": "127.0.0.1",
        "upstream_port": str(p["upstream"]),
        # The OTLP/gRPC collector of the optional `tracing` flag (STRICT_DNS for a host name).
        "otlp_address": "127.0.0.1",
        "otlp_port": "4317",
        "otlp_cluster_type": "STATIC",
        **LIMITS,
        **EXTERNAL_ISSUERS,
    }


def production_values() -> dict[str, str]:
    """What the production overlay changes: more logins per Envoy (3+ gateway replicas share
    the load), and xff_trusted_hops 0 because its LoadBalancer is L4 (externalTrafficPolicy
    Local keeps the client's address as the TCP peer). Behind an L7 load balancer that appends
    to x-forwarded-for, set xff_trusted_hops to 1."""
    return {"login_global_burst": "1500", "login_global_refill": "750", "xff_trusted_hops": "0"}


def committed_variants() -> list[Variant]:
    local = shipped_values()
    k8s_dns = f"{K8S_NAMESPACE}.svc.cluster.local"
    kubernetes = {
        **local,
        "listen_address": "0.0.0.0",
        "ext_authz_address": pipe(K8S_UDS),
        "service_cluster_type": "STRICT_DNS",
        "login_address": f"login-service.{k8s_dns}",
        "upstream_address": f"demo-upstream.{k8s_dns}",
    }
    return [
        Variant("local", """\
# Local ingress: Envoy → ext-authz (gRPC, TCP 127.0.0.1:9001) → login-service / demo-upstream.
#
# Product code, exercised as shipped by the e2e tests (e2e/tests/e2e) with a real Envoy.
# envoy/envoy-uds.yaml is rendered from the same source and differs only in the ext_authz
# cluster's endpoint address. See envoy/README.md for the route table and the reasons behind
# each setting.
""", SHIPPED_FLAGS, local, REPO / "envoy" / "envoy.yaml"),
        Variant("uds", f"""\
# Local ingress, Unix-socket variant: Envoy → ext-authz (gRPC over {LOCAL_UDS},
# `ext-authz --grpc-uds {LOCAL_UDS}`) → login-service / demo-upstream.
#
# Product code, exercised as shipped by the e2e tests (e2e/tests/e2e) with a real Envoy.
# Rendered from the same source as envoy/envoy.yaml: only the ext_authz cluster's endpoint
# address differs. See envoy/README.md for the route table and the reasons behind each setting.
""", SHIPPED_FLAGS, {**local, "ext_authz_address": pipe(LOCAL_UDS)},
                REPO / "envoy" / "envoy-uds.yaml"),
        Variant("kubernetes", f"""\
# Kubernetes gateway config: the same filters, routes and ext_authz settings as
# envoy/envoy-uds.yaml (the local Unix-socket variant, rendered from the same source). The only
# differences:
#   - the ingress listener binds 0.0.0.0:8080 (the pod IP) instead of 127.0.0.1:8080;
#   - the ext_authz pipe is {K8S_UDS} (the pod's shared emptyDir);
#   - login_service and demo_upstream are STRICT_DNS clusters on the in-cluster Service names;
#   - an extra `ready` listener on 0.0.0.0:8081 that answers only GET /ready by proxying to the
#     admin interface (cluster envoy_admin), for the kubelet's readiness probe. The admin
#     interface itself stays on 127.0.0.1:9901 (config_dump, /quitquitquit never leave the pod).

""", SHIPPED_FLAGS | {"kubernetes"}, kubernetes,
                REPO / "manifests" / "base" / "gateway" / "envoy.yaml"),
        Variant("production", """\
# The production overlay's gateway config: the kubernetes variant (manifests/base/gateway/envoy.yaml)
# with this deployment's limits (envoy/render.py `production_values`); the overlay's
# configMapGenerator replaces the base ConfigMap's envoy.yaml with it.

""", SHIPPED_FLAGS | {"kubernetes"}, {**kubernetes, **production_values()},
                REPO / "manifests" / "overlays" / "production" / "envoy.yaml"),
    ]


def jwks(secret_file: Path, kid: str) -> str:
    """The HS256 key as a JWKS, for jwt_authn's local_jwks."""
    # auth-token uses the key file's bytes as the HMAC key (one trailing newline trimmed).
    secret = secret_file.read_bytes()
    if secret.endswith(b"\n"):
        secret = secret[:-1]
    k = base64.urlsafe_b64encode(secret).rstrip(b"=").decode()
    return json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "kid": kid, "k": k}]},
                      separators=(",", ":"))


def bench_variants(secret_file: Path, kid: str, uds: str, offset: int) -> list[Variant]:
    shipped = shipped_values(offset)
    over_tcp = shipped["ext_authz_address"]
    lean = [  # name, description, flags besides `lean`, ext-authz's address
        ("a-noauth", "no auth filter", set(), over_tcp),
        ("b-jwt_authn", "jwt_authn", {"jwt_authn"}, over_tcp),
        ("c-ext_authz_tcp", "ext_authz over TCP", {"ext_authz"}, over_tcp),
        ("c2-ext_authz_tcp_allowlist", "ext_authz over TCP, allowed_headers",
         {"ext_authz", "allowed_headers"}, over_tcp),
        ("d-ext_authz_uds", "ext_authz over a Unix socket", {"ext_authz"}, pipe(uds)),
    ]
    out = []
    for i, (name, desc, flags, authz_address) in enumerate(lean, start=1):
        values = {
            **shipped,
            "admin_port": str(int(shipped["admin_port"]) + i),
            "listen_port": str(int(shipped["listen_port"]) + i),
            "route_config_name": "bench_routes",
            "ext_authz_address": authz_address,
        }
        if "jwt_authn" in flags:
            values["jwks"] = jwks(secret_file, kid)
        header = f"""\
# Bench-only Envoy config ({desc}); not for production. The lean shape shared by
# BENCHMARKS.md's configurations (a)-(d): one listener, one route to the demo upstream, no access
# log, and only the auth filter under test. The HCM, ext_authz filter and cluster lines are the
# shipped config's own, so the auth cost is compared like for like.
"""
        out.append(Variant(name, header, frozenset({"lean"} | flags), values))
    out.append(Variant("e-shipped", f"""\
# Bench-only: envoy/envoy.yaml (the local variant) with every port + {offset}.
""", SHIPPED_FLAGS, shipped))
    return out


# --- the shipped config's cost (issue #15 §4, scripts/bench-shipped.sh): its own block --------
def shipped_diff_variants(variants: list[Variant]) -> list[Variant]:
    """c+FLAG for each edge flag: configuration (c) plus one part of the shipped config, on the
    ports after the lean ones (listener offset+8090.., admin offset+9910.., the HTTPS address of
    c+tls at offset+8490)."""
    c = next(v for v in variants if v.name == "c-ext_authz_tcp")
    first = int(c.values["listen_port"]) - 3 + 10  # c is the third lean config: offset+8090
    admin = int(c.values["admin_port"]) - 3 + 10
    out = []
    for i, (flag, desc) in enumerate(EDGE_FLAGS.items()):
        values = {**c.values, "listen_port": str(first + i), "admin_port": str(admin + i),
                  "tls_port": str(first + 400 + i)}
        header = f"""\
# Bench-only: configuration (c) plus one part of the shipped config ({flag}: {desc}), to measure
# that part's Envoy CPU per request (BENCHMARKS.md "The shipped config's cost").
"""
        out.append(Variant(f"c+{flag}", header, c.flags | {flag}, values))
    return out


# Why: the e2e tests exercise the local variant only; the Kubernetes gateway enforces the same
# policy because its flag can only add lines (the readiness listener and its cluster) and its
# values only move addresses. An `if not kubernetes` or an `else` would break that silently.
ADDITIVE = "kubernetes blocks may only add lines: no `if not kubernetes`, no `else` in one"
DIRECTIVE = re.compile(r"\s*#%(?:#.*|\s*(?P<word>if|else|endif)\b\s*(?P<arg>.*))")
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def render(template: str, variant: Variant) -> str:
    """The variant's file: its header, then the template's kept lines with values filled in.

    Fails loudly (ValueError) on an unknown flag or placeholder and an unbalanced block, so a
    typo in the source never renders a silently different config.
    """
    unknown = variant.flags - FLAGS
    if unknown:
        raise ValueError(f"{variant.name}: unknown flags {sorted(unknown)}")
    # Why: a config that is not a lean bench shape is one a user runs; it must not lose a part.
    if "lean" not in variant.flags and not EDGE_FLAGS.keys() <= variant.flags:
        raise ValueError(f"{variant.name}: a non-lean variant needs every edge flag, missing "
                         f"{sorted(EDGE_FLAGS.keys() - variant.flags)}")
    out = []
    keep = [True]  # one entry per open block: are its lines kept?
    flags: list[str] = []  # the flag of each open block
    for n, line in enumerate(template.splitlines(keepends=True), start=1):
        d = DIRECTIVE.fullmatch(line.rstrip("\n"))
        if not d and line.lstrip().startswith("#%"):
            raise ValueError(f"{SOURCE_NAME}:{n}: not a directive: {line.strip()!r}")
        if d:
            word, arg = d["word"], d["arg"]
            if word == "if":
                negate, flag = (True, arg[4:].strip()) if arg.startswith("not ") else (False, arg)
                if flag not in FLAGS:
                    raise ValueError(f"{SOURCE_NAME}:{n}: unknown flag {flag!r}")
                if flag == "kubernetes" and negate:
                    raise ValueError(f"{SOURCE_NAME}:{n}: {ADDITIVE}")
                keep.append(keep[-1] and ((flag in variant.flags) != negate))
                flags.append(flag)
            elif word in ("else", "endif"):
                if not flags:
                    raise ValueError(f"{SOURCE_NAME}:{n}: {word} without if")
                if word == "else" and flags[-1] == "kubernetes":
                    raise ValueError(f"{SOURCE_NAME}:{n}: {ADDITIVE}")
                taken = keep.pop()
                if word == "else":
                    keep.append(keep[-1] and not taken)
                else:
                    flags.pop()
            continue
        if not keep[-1]:
            continue

        def fill(m: re.Match[str], n: int = n) -> str:
            if m[1] not in variant.values:
                raise ValueError(f"{SOURCE_NAME}:{n}: no value {m[1]!r} for {variant.name}")
            return variant.values[m[1]]

        out.append(PLACEHOLDER.sub(fill, line))
    if flags:
        raise ValueError(f"{SOURCE_NAME}: {len(flags)} unclosed if")
    return variant.header + "".join(out)


def committed_text(variant: Variant, template: str) -> str:
    return GENERATED + render(template, variant)


def envoy_binary() -> str:
    """`envoy` from PATH, else the pinned one in .venv (the same choice as scripts/envoy.sh)."""
    found = shutil.which("envoy") or str(REPO / ".venv" / "bin" / "envoy")
    if not Path(found).is_file():
        sys.exit("render.py: no envoy binary; run scripts/bootstrap.sh")
    return found


def validate(envoy: str, config: Path) -> str | None:
    """None when Envoy accepts the config, else its output. Run in the config's directory,
    which holds tls/sds.yaml."""
    proc = subprocess.run([envoy, "--mode", "validate", "--disable-hot-restart", "-c", str(config)],
                          capture_output=True, text=True, timeout=120, cwd=config.parent)
    return None if proc.returncode == 0 else proc.stdout + proc.stderr


def write(template: str) -> int:
    for variant in committed_variants():
        text = committed_text(variant, template)
        if not variant.path.exists() or variant.path.read_text() != text:
            variant.path.write_text(text)
            print(f"render.py: wrote {variant.path.relative_to(REPO)}")
    for path in SDS_FILES:
        if not path.exists() or path.read_text() != SDS:
            path.write_text(SDS)
            print(f"render.py: wrote {path.relative_to(REPO)}")
    return 0


def check(template: str) -> int:
    failed = False
    for variant in committed_variants():
        want = committed_text(variant, template)
        have = variant.path.read_text()
        if have != want:
            rel = str(variant.path.relative_to(REPO))
            sys.stdout.writelines(difflib.unified_diff(
                have.splitlines(True), want.splitlines(True), rel, f"rendered ({variant.name})"))
            print(f"render.py: {rel} is not what {SOURCE_NAME} renders", file=sys.stderr)
            failed = True
    for path in SDS_FILES:
        if not path.exists() or path.read_text() != SDS:
            print(f"render.py: {path.relative_to(REPO)} is stale", file=sys.stderr)
            failed = True
    if failed:
        print("render.py: run `make envoy-configs` and commit the result", file=sys.stderr)
    envoy = envoy_binary()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # Validation opens the SDS file (not the certificate), relative to the working directory.
        (work / "tls").mkdir()
        (work / "tls" / "sds.yaml").write_text(SDS)
        key = work / "key"
        key.write_bytes(base64.b64encode(b"k" * 48))  # throwaway: validation never uses it
        local = committed_variants()[0]
        # The optional flags, never in a committed file: validated here, exercised by e2e.
        optional = [Variant(f"local+{flag}", local.header, local.flags | {flag}, local.values)
                    for flag in ("identity_limit", "external_issuers", "tracing")]
        kubernetes = committed_variants()[2]
        optional.append(Variant("kubernetes+tracing", kubernetes.header,
                                kubernetes.flags | {"tracing"},
                                {**kubernetes.values, "otlp_cluster_type": "STRICT_DNS",
                                 "otlp_address": "otel-collector.observability.svc.cluster.local"}))
        bench = bench_variants(key, "bench-1", str(work / "authz.sock"), 10000)
        variants = committed_variants() + optional + bench + shipped_diff_variants(bench)
        for variant in variants:
            config = work / f"{variant.name}.yaml"
            config.write_text(render(template, variant))
            error = validate(envoy, config)
            if error:
                print(error, file=sys.stderr)
                print(f"render.py: envoy --mode validate rejects variant {variant.name}",
                      file=sys.stderr)
                failed = True
    if not failed:
        print(f"render.py: {len(variants)} variants rendered and valid, committed files up to date")
    return 1 if failed else 0


def bench(template: str, args: argparse.Namespace) -> int:
    out = Path(args.bench)
    out.mkdir(parents=True, exist_ok=True)
    variants = bench_variants(Path(args.secret_file), args.kid, args.uds, args.port_offset)
    if args.eddsa_jwks:
        variants.append(eddsa_jwt_authn_variant(variants, Path(args.eddsa_jwks)))
    if args.shipped_diffs:
        variants.extend(shipped_diff_variants(variants))
    for variant in variants:
        (out / f"{variant.name}.yaml").write_text(render(template, variant))
    return 0


# --- token-cache bench (issue #12, scripts/bench-cache.sh): its own block ---------------------
def eddsa_jwt_authn_variant(variants: list[Variant], jwks_file: Path) -> Variant:
    """f-jwt_authn_eddsa: configuration (b) verifying EdDSA tokens with login-service's public
    JWKS (`/.well-known/jwks.json`, public keys only) as `local_jwks`, on the next lean port
    (listener offset+8086, admin offset+9907)."""
    b = next(v for v in variants if v.name == "b-jwt_authn")
    n = sum(1 for v in variants if "lean" in v.flags) + 1
    keys = json.loads(jwks_file.read_text())
    if not keys.get("keys") or any(k.get("kty") == "oct" for k in keys["keys"]):
        raise ValueError(f"--eddsa-jwks {jwks_file}: need public keys only")
    first = int(b.values["listen_port"]) - 2  # b is the second lean config
    admin = int(b.values["admin_port"]) - 2
    values = {**b.values, "jwks": json.dumps(keys, separators=(",", ":")),
              "listen_port": str(first + n), "admin_port": str(admin + n)}
    header = b.header.replace("(jwt_authn)", "(jwt_authn, EdDSA keys from a public JWKS)")
    return Variant("f-jwt_authn_eddsa", header, b.flags, values)


def custom(template: str, args: argparse.Namespace) -> int:
    """One committed variant with extra flags and values, to a file: a deployment's own limits,
    or the e2e tests' variants (small buckets, the identity limit, one trusted hop)."""
    base = {v.name: v for v in committed_variants()}.get(args.variant)
    if base is None:
        raise ValueError(f"--variant: no committed variant {args.variant!r}")
    values = dict(base.values)
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or name not in values:
            raise ValueError(f"--set {item!r}: not NAME=VALUE of a value of {base.name}")
        values[name] = value
    variant = Variant(base.name, base.header, base.flags | set(args.flag), values)
    Path(args.out).write_text(GENERATED + render(template, variant))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="exit 1 with a diff when a committed config is stale; validate all")
    mode.add_argument("--bench", metavar="OUT_DIR", help="render the bench configs into OUT_DIR")
    p.add_argument("--secret-file", help="bench: the HS256 key file (for jwt_authn)")
    p.add_argument("--kid", help="bench: the key's id")
    p.add_argument("--uds", help="bench: ext-authz's Unix socket, for d-ext_authz_uds")
    p.add_argument("--port-offset", type=int, default=10000, help="bench: added to every port")
    p.add_argument("--eddsa-jwks", help="bench: also f-jwt_authn_eddsa, jwt_authn with this "
                   "public JWKS file (scripts/bench-cache.sh)")
    p.add_argument("--shipped-diffs", action="store_true",
                   help="bench: also c+FLAG, (c) plus each part of the shipped config "
                   "(scripts/bench-shipped.sh)")
    mode.add_argument("--variant", help="render this committed variant with --flag/--set to --out")
    p.add_argument("--flag", action="append", default=[], help="--variant: add a flag")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="--variant: change a value (e.g. login_address_burst=5)")
    p.add_argument("--out", help="--variant: the file to write")
    args = p.parse_args()
    if args.variant and not args.out:
        p.error("--variant needs --out")
    if args.bench:
        missing = [f"--{n.replace('_', '-')}" for n in ("secret_file", "kid", "uds")
                   if getattr(args, n) is None]
        if missing:
            p.error(f"--bench needs {' '.join(missing)}")
    template = SOURCE.read_text()
    try:
        if args.bench:
            return bench(template, args)
        if args.variant:
            return custom(template, args)
        return check(template) if args.check else write(template)
    except ValueError as e:  # a broken source: say where, no traceback
        print(f"render.py: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
