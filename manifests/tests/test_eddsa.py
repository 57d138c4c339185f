"""The EdDSA mode (components/eddsa, overlays/minikube-eddsa): login-service holds the Ed25519
private key, the gateway pod only public material. Checked on the rendered overlays (no cluster):
no private signing key and no HMAC secret reaches the gateway pod, by any route (volume,
projected volume, env, envFrom); login-service's signing kid exists and its public half is what
the gateway holds; the gateway's JWKS URL is login-service's, and the NetworkPolicies admit it.
"""

from __future__ import annotations

import subprocess
from urllib.parse import urlparse

import pytest

from conftest import MANIFESTS, OVERLAYS
from test_manifests import (
    _allowed, all_containers, config_data, container_env, container_ports, keys_volume, our_binary,
    pod_spec,
)

EDDSA_OVERLAYS = [o for o in OVERLAYS
                  if "components/eddsa" in (MANIFESTS / "overlays" / o / "kustomization.yaml").read_text()]


def test_an_eddsa_overlay_exists():
    # Why: every test below is parametrized over EDDSA_OVERLAYS; an empty list would pass them all.
    assert "minikube-eddsa" in EDDSA_OVERLAYS


@pytest.fixture(params=EDDSA_OVERLAYS)
def r(request, overlays):
    return overlays[request.param]


def referenced(r, spec: dict) -> list[tuple[str, str]]:
    """Every (kind, name) of Secret/ConfigMap a pod spec can read."""
    refs = []
    for v in spec.get("volumes", []):
        if "secret" in v:
            refs.append(("Secret", v["secret"]["secretName"]))
        if "configMap" in v:
            refs.append(("ConfigMap", v["configMap"]["name"]))
        for src in v.get("projected", {}).get("sources", []):
            if "secret" in src:
                refs.append(("Secret", src["secret"]["name"]))
            if "configMap" in src:
                refs.append(("ConfigMap", src["configMap"]["name"]))
    for c in all_containers(spec):
        for src in c.get("envFrom", []):
            if "secretRef" in src:
                refs.append(("Secret", src["secretRef"]["name"]))
            if "configMapRef" in src:
                refs.append(("ConfigMap", src["configMapRef"]["name"]))
        for item in c.get("env", []):
            ref = item.get("valueFrom", {})
            if "secretKeyRef" in ref:
                refs.append(("Secret", ref["secretKeyRef"]["name"]))
            if "configMapKeyRef" in ref:
                refs.append(("ConfigMap", ref["configMapKeyRef"]["name"]))
    return refs


def signing_key(r) -> tuple[str, str]:
    """(kid, PEM) login-service signs with."""
    login = next(c for c in pod_spec(r.get("Deployment", "login-service"))["containers"]
                 if our_binary(c) == "login-service")
    kid = container_env(r, login)["JWT_SIGNING_KID"]
    kind, name, data = keys_volume(r, "login-service", "login-service")
    assert (kind, name) == ("Secret", "jwt-signing-key")
    assert f"{kid}.pem" in data, f"signing kid {kid} not in {sorted(data)}"
    return kid, data[f"{kid}.pem"]


def test_no_private_signing_key_or_hmac_secret_reaches_the_gateway(r):
    kid, private = signing_key(r)
    assert "PRIVATE KEY" in private
    assert not r.has("Secret", "jwt-keys"), "an HMAC key Secret exists in the EdDSA mode"
    gateway = pod_spec(r.get("Deployment", "gateway"))
    refs = referenced(r, gateway)
    assert ("Secret", "jwt-signing-key") not in refs
    body = private.strip().splitlines()[1]  # the base64 line: found in any encoding of the file
    for kind, name in refs:
        for key, value in config_data(r, kind, name).items():
            assert body not in value, f"the signing key is in {kind} {name}/{key}"
            # Envoy's HTTPS key (gateway-tls) is the one private key the gateway may hold.
            if (kind, name) != ("Secret", "gateway-tls"):
                assert "PRIVATE KEY" not in value, f"a private key in {kind} {name}/{key}"
    for c in all_containers(gateway):
        env = container_env(r, c)
        assert "JWT_SECRET" not in env, f"{c['name']}: JWT_SECRET"


def test_the_gateway_holds_the_public_half_of_the_signing_key(r, tmp_path):
    kid, private = signing_key(r)
    kind, name, public = keys_volume(r, "gateway", "ext-authz")
    assert (kind, name) == ("ConfigMap", "jwt-public-keys")
    assert public and all(k.endswith(".pub.pem") for k in public), sorted(public)
    (tmp_path / "k.pem").write_text(private)
    derived = subprocess.run(["openssl", "pkey", "-in", str(tmp_path / "k.pem"), "-pubout"],
                             check=True, capture_output=True, text=True).stdout
    assert public[f"{kid}.pub.pem"].strip() == derived.strip()
    # Only login-service mounts the signing key.
    for w in r.workloads():
        if w["metadata"]["name"] != "login-service":
            assert ("Secret", "jwt-signing-key") not in referenced(r, pod_spec(w)), w["metadata"]["name"]


def test_the_gateway_follows_login_services_jwks_and_may_reach_it(r):
    gateway = pod_spec(r.get("Deployment", "gateway"))
    c = next(c for c in all_containers(gateway) if our_binary(c) == "ext-authz")
    url = urlparse(container_env(r, c)["JWKS_URLS"])
    assert url.path == "/.well-known/jwks.json"
    svc = r.get("Service", url.hostname)
    port = next(p for p in svc["spec"]["ports"] if p["port"] == url.port)
    login = r.get("Deployment", "login-service")
    assert svc["spec"]["selector"].items() <= login["spec"]["template"]["metadata"]["labels"].items()
    target = port.get("targetPort", port["port"])
    if isinstance(target, str):  # a named container port
        target = container_ports(next(c for c in pod_spec(login)["containers"]
                                      if our_binary(c) == "login-service"))[target]
    assert _allowed(r, r.get("Deployment", "gateway")["spec"]["template"]["metadata"]["labels"],
                    login["spec"]["template"]["metadata"]["labels"], target)
