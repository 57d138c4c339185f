#!/usr/bin/env python3
"""Renders the bench-only Envoy configs into OUT_DIR (used by scripts/bench.sh).

  render_envoy.py OUT_DIR --secret-file FILE --kid KID --uds PATH [--port-offset 10000]

Writes six files, one per configuration of BENCHMARKS.md:
  a-noauth.yaml          lean listener, no auth filter
  b-jwt_authn.yaml       lean + Envoy's native jwt_authn, the same HS256 key inline (local_jwks)
  c-ext_authz_tcp.yaml   lean + ext_authz → ext-authz over TCP
  c2-ext_authz_tcp_allowlist.yaml  (c) + `allowed_headers`: only what ext-authz reads is sent
  d-ext_authz_uds.yaml   lean + ext_authz → ext-authz over the Unix socket
  e-shipped.yaml         envoy/envoy.yaml verbatim, every port moved by --port-offset
Ports: shipped N → N + offset (8080 → 18080, 9901 → 19901, 9001 → 19001, 5000 → 15000,
8000 → 18000); the lean configs listen on 18081-18085 with admin 19902-19906 (in the order
above). So a `make run` stack on the default ports can stay up during a bench run.
"""
import argparse
import base64
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHIPPED_PORTS = {"listen": 8080, "admin": 9901, "authz": 9001, "login": 5000, "upstream": 8000}

EXT_AUTHZ_FILTER = """\
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      grpc_service:
                        envoy_grpc: { cluster_name: ext_authz }
                        timeout: 0.5s
                      failure_mode_allow: false
                      status_on_error: { code: ServiceUnavailable }
                      clear_route_cache: false"""

# Every ext-authz feature on: the route carries a role requirement (the bench token is an
# admin's), so the policy is parsed and checked on every request, as on the shipped /admin/ route.
REQUIRE_ROLES = """\
                          typed_per_filter_config:
                            envoy.filters.http.ext_authz:
                              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                              check_settings:
                                context_extensions:
                                  require_roles: admin"""

# ext-authz reads two request headers: `authorization` (the token) and `x-request-id` (logs).
# Envoy sends every header unless told otherwise; the allowlist shrinks the CheckRequest Envoy
# builds and serializes (and ext-authz decodes).
ALLOWLIST = """
                      allowed_headers:
                        patterns:
                          - exact: authorization
                          - exact: x-request-id"""

EXT_AUTHZ_CLUSTER = """\
    - name: ext_authz
      type: STATIC
      connect_timeout: 0.25s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {{}}
      load_assignment:
        cluster_name: ext_authz
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    {address}"""

# Native filter: same key, same checks ext-authz makes that jwt_authn can express (signature,
# exp/nbf), the token forwarded like ext_authz leaves it, and the two string claims copied to
# the same identity headers (jwt_authn cannot join the `roles` array into a header). No JWT
# cache (`jwt_cache_config` unset): every request is verified, as ext-authz does.
JWT_AUTHN_FILTER = """\
                  - name: envoy.filters.http.jwt_authn
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
                      providers:
                        edge:
                          local_jwks:
                            inline_string: '{jwks}'
                          forward: true
                          claim_to_headers:
                            - {{ header_name: x-auth-user-id, claim_name: sub }}
                            - {{ header_name: x-auth-email, claim_name: email }}
                      rules:
                        - match: {{ prefix: / }}
                          requires: {{ provider_name: edge }}"""


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out_dir")
    p.add_argument("--secret-file", required=True)
    p.add_argument("--kid", required=True)
    p.add_argument("--uds", required=True)
    p.add_argument("--port-offset", type=int, default=10000)
    a = p.parse_args()
    out = pathlib.Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    off = a.port_offset
    ports = {k: v + off for k, v in SHIPPED_PORTS.items()}

    # auth-token uses the key file's bytes as the HMAC key (one trailing newline trimmed).
    secret = pathlib.Path(a.secret_file).read_bytes()
    if secret.endswith(b"\n"):
        secret = secret[:-1]
    k = base64.urlsafe_b64encode(secret).rstrip(b"=").decode()
    jwks = json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "kid": a.kid, "k": k}]},
                      separators=(",", ":"))

    lean = (ROOT / "bench/envoy/lean.yaml.in").read_text()
    tcp = "socket_address: { address: 127.0.0.1, port_value: %d }" % ports["authz"]
    uds = "pipe: { path: %s }" % a.uds
    variants = [
        ("a-noauth", "none", "", "", ""),
        ("b-jwt_authn", "jwt_authn", JWT_AUTHN_FILTER.format(jwks=jwks), "", ""),
        ("c-ext_authz_tcp", "ext_authz over TCP", EXT_AUTHZ_FILTER,
         EXT_AUTHZ_CLUSTER.format(address=tcp), REQUIRE_ROLES),
        ("c2-ext_authz_tcp_allowlist", "ext_authz over TCP, allowed_headers",
         EXT_AUTHZ_FILTER + ALLOWLIST, EXT_AUTHZ_CLUSTER.format(address=tcp), REQUIRE_ROLES),
        ("d-ext_authz_uds", "ext_authz over a Unix socket", EXT_AUTHZ_FILTER,
         EXT_AUTHZ_CLUSTER.format(address=uds), REQUIRE_ROLES),
    ]
    for i, (name, desc, filters, clusters, route_extra) in enumerate(variants, start=1):
        text = (lean.replace("@VARIANT@", desc)
                .replace("@ADMIN_PORT@", str(ports["admin"] + i))
                .replace("@LISTEN_PORT@", str(ports["listen"] + i))
                .replace("@UPSTREAM_PORT@", str(ports["upstream"]))
                .replace("@ROUTE_EXTRA@\n", route_extra + "\n" if route_extra else "")
                .replace("@HTTP_FILTERS@\n", filters + "\n" if filters else "")
                .replace("@CLUSTERS@\n", clusters + "\n" if clusters else ""))
        assert "@" not in re.sub(r'"@type"', "", text), f"unrendered placeholder in {name}"
        (out / f"{name}.yaml").write_text(text)

    shipped = (ROOT / "envoy/envoy.yaml").read_text()
    for key, port in SHIPPED_PORTS.items():
        shipped, n = re.subn(r"port_value: %d\b" % port, "port_value: %d" % ports[key], shipped)
        if n != 1:
            print(f"render_envoy: expected one 'port_value: {port}' in envoy/envoy.yaml, found {n}",
                  file=sys.stderr)
            return 1
    header = ("# GENERATED by bench/render_envoy.py from envoy/envoy.yaml: identical except every\n"
              f"# port + {off}. Do not edit.\n")
    (out / "e-shipped.yaml").write_text(header + shipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
