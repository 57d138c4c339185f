#!/usr/bin/env python3
"""Derives manifests/base/gateway/envoy.yaml from envoy/envoy-uds.yaml, keeping its comments.

    python3 manifests/tests/derive_envoy.py           # exit 1 and a diff when out of date
    python3 manifests/tests/derive_envoy.py --write   # regenerate after editing envoy-uds.yaml

Text substitutions, each required to match exactly once, so a change in the local file that
touches one of them fails loudly instead of deriving something wrong. test_manifests.py checks
the result semantically (parsed YAML equal modulo the listed differences) as well.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "envoy" / "envoy-uds.yaml"
TARGET = REPO / "manifests" / "base" / "gateway" / "envoy.yaml"
NAMESPACE = "edge-auth"

HEADER = """\
# Kubernetes gateway config: DERIVED from envoy/envoy-uds.yaml (the local Unix-socket variant)
# by manifests/tests/derive_envoy.py --write. Do not edit by hand: edit envoy/envoy-uds.yaml,
# then regenerate. Same filters, routes and ext_authz settings; the only differences (enforced
# by manifests/tests/test_manifests.py):
#   - the ingress listener binds 0.0.0.0:8080 (the pod IP) instead of 127.0.0.1:8080;
#   - the ext_authz pipe is /sockets/ext-authz.sock (the pod's shared emptyDir);
#   - login_service and demo_upstream are STRICT_DNS clusters on the in-cluster Service names;
#   - an extra `ready` listener on 0.0.0.0:8081 that answers only GET /ready by proxying to the
#     admin interface (cluster envoy_admin), for the kubelet's readiness probe. The admin
#     interface itself stays on 127.0.0.1:9901 (config_dump, /quitquitquit never leave the pod).
"""

READY_LISTENER = """
    # Kubernetes only: readiness. Exposes exactly GET /ready of the loopback admin interface
    # (503 while initializing or draining); every other path is a 404 from Envoy itself.
    - name: ready
      address:
        socket_address: { address: 0.0.0.0, port_value: 8081 }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ready
                route_config:
                  name: ready
                  virtual_hosts:
                    - name: ready
                      domains: ["*"]
                      routes:
                        - match:
                            path: /ready
                            headers:
                              - name: ":method"
                                string_match: { exact: GET }
                          route: { cluster: envoy_admin, timeout: 1s }
                        - match: { prefix: / }
                          direct_response: { status: 404 }
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router

  clusters:"""

ADMIN_CLUSTER = """
    # Kubernetes only: the loopback admin interface, target of the `ready` listener.
    - name: envoy_admin
      type: STATIC
      connect_timeout: 0.25s
      load_assignment:
        cluster_name: envoy_admin
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: { address: 127.0.0.1, port_value: 9901 }
"""

SUBSTITUTIONS = [
    ("        socket_address: { address: 127.0.0.1, port_value: 8080 }",
     "        socket_address: { address: 0.0.0.0, port_value: 8080 }"),
    ("pipe: { path: /tmp/edge-auth/ext-authz.sock }", "pipe: { path: /sockets/ext-authz.sock }"),
    ("    - name: login_service\n      type: STATIC\n", "    - name: login_service\n      type: STRICT_DNS\n"),
    ("    - name: demo_upstream\n      type: STATIC\n", "    - name: demo_upstream\n      type: STRICT_DNS\n"),
    ("socket_address: { address: 127.0.0.1, port_value: 5000 }",
     f"socket_address: {{ address: login-service.{NAMESPACE}.svc.cluster.local, port_value: 5000 }}"),
    ("socket_address: { address: 127.0.0.1, port_value: 8000 }",
     f"socket_address: {{ address: demo-upstream.{NAMESPACE}.svc.cluster.local, port_value: 8000 }}"),
    ("\n\n  clusters:", READY_LISTENER),
]


def derive(source: str) -> str:
    # The local file's leading comment block describes the local setup: replace it.
    body = source[source.index("\nadmin:") + 1:]
    for old, new in SUBSTITUTIONS:
        count = body.count(old)
        if count != 1:
            raise SystemExit(f"derive_envoy: expected exactly one {old!r} in {SOURCE}, found {count}")
        body = body.replace(old, new)
    return HEADER + "\n" + body.rstrip("\n") + "\n" + ADMIN_CLUSTER


def main() -> int:
    want = derive(SOURCE.read_text())
    if "--write" in sys.argv[1:]:
        TARGET.write_text(want)
        print(f"wrote {TARGET.relative_to(REPO)}")
        return 0
    have = TARGET.read_text()
    if have != want:
        sys.stdout.writelines(difflib.unified_diff(have.splitlines(True), want.splitlines(True),
                                                   str(TARGET.relative_to(REPO)), "derived"))
        print("\nout of date: python3 manifests/tests/derive_envoy.py --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
