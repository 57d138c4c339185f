"""The integration examples (examples/envoy-gateway, examples/istio): what can be checked offline.

Checked: every file parses as YAML, every document names an apiVersion, kind and name, and the
settings our ext-authz needs are there and agree with our own Envoy config (fail closed, the
headers sent, the timeout, the gRPC port, the public POST /login, the admin role). NOT checked:
the documents against Envoy Gateway's or Istio's CRD schemas (no schemas are available offline
here), nor against a running cluster. examples/README.md says the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import REPO

EXAMPLES = REPO / "examples"
EXT_AUTHZ_GRPC_PORT = 9001  # manifests/base: GRPC_ADDR=0.0.0.0:9001


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def of_kind(directory: str, kind: str) -> list[dict]:
    return [d for p in sorted((EXAMPLES / directory).glob("*.yaml")) for d in docs(p) if d["kind"] == kind]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*/*.yaml")), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_every_example_parses_and_names_its_object(path):
    found = docs(path)
    assert found, path
    for d in found:
        assert d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"), (path, d)


def test_envoy_gateway_security_policies_fail_closed_and_send_what_ext_authz_reads():
    policies = of_kind("envoy-gateway", "SecurityPolicy")
    assert len(policies) == 2
    for p in policies:
        ext = p["spec"]["extAuth"]
        assert ext["failOpen"] is False
        assert ext["headersToExtAuth"] == ["authorization", "x-request-id"]
        assert ext["timeout"] == "500ms"
        assert [b["port"] for b in ext["grpc"]["backendRefs"]] == [EXT_AUTHZ_GRPC_PORT]
    admin = next(p for p in policies if p["metadata"]["name"] == "edge-auth-admin")
    assert admin["spec"]["extAuth"]["contextExtensions"] == [
        {"name": "require_roles", "type": "Value", "value": "admin"}]
    # The login route has no SecurityPolicy: logging in needs no token.
    targets = {t["name"] for p in policies for t in p["spec"]["targetRefs"]}
    assert "login" not in targets


def test_envoy_gateway_login_route_is_post_login_and_token_only_and_rate_limited():
    login = next(r for r in of_kind("envoy-gateway", "HTTPRoute") if r["metadata"]["name"] == "login")
    # One rule for both paths, as our Envoy config's `login` route: /token shares /login's buckets.
    (rule,) = login["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "Exact", "value": "/login"}, "method": "POST"},
                               {"path": {"type": "Exact", "value": "/token"}, "method": "POST"}]
    limit = of_kind("envoy-gateway", "BackendTrafficPolicy")[0]
    assert limit["spec"]["targetRefs"][0]["name"] == "login"
    assert limit["spec"]["rateLimit"]["type"] == "Local"


def test_istio_provider_fails_closed_with_503_and_policies_use_it():
    mesh = of_kind("istio", "IstioOperator")[0]["spec"]["meshConfig"]
    (provider,) = mesh["extensionProviders"]
    grpc = provider["envoyExtAuthzGrpc"]
    assert grpc["port"] == EXT_AUTHZ_GRPC_PORT and grpc["timeout"] == "0.5s"
    assert grpc["failOpen"] is False and grpc["statusOnError"] == "503"
    policies = {p["spec"]["action"]: p for p in of_kind("istio", "AuthorizationPolicy")}
    custom = policies["CUSTOM"]["spec"]
    assert custom["provider"]["name"] == provider["name"]
    # Everything is checked but POST /login and POST /token.
    assert custom["rules"] == [
        {"to": [{"operation": {"notPaths": ["/login", "/token"]}}]},
        {"to": [{"operation": {"paths": ["/login", "/token"], "notMethods": ["POST"]}}]},
    ]
    deny = policies["DENY"]["spec"]["rules"][0]
    assert deny["when"] == [{"key": "request.headers[x-auth-roles]", "notValues": ["admin", "admin,*", "*,admin"]}]
