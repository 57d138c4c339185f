"""The rendered gateway, run for real on loopback: Envoy with the Kubernetes config + ext-authz
over the Unix socket + login-service + demo-upstream, each with the environment the minikube
overlay gives its container.

What differs from the cluster, and only that: ports are free loopback ports instead of the pod's
(the Service DNS names resolve to 127.0.0.1 via `localhost`), Envoy's admin interface is a Unix
socket (the `envoy_admin` cluster follows it), the socket and keys directories are temporary, and login-service uses a SQLite file instead of MySQL (the MySQL path is covered
by the crates' own tests). This proves the pieces agree at run time: the readiness listener, the
socket, ext-authz's and login-service's issuer/audience/keys, the walkthrough's requests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import shutil

import pytest
import yaml

from conftest import REPO, binary
from test_manifests import all_containers, config_data, container_env, envoy_configmap_name, our_binary, pod_spec

OVERLAY = "minikube"
PASSWORD = "correct horse battery staple"


def publish_keys(keys_dir: Path, keys: dict[str, str]) -> None:
    """Lays out (or atomically updates) a Secret volume exactly as the kubelet does: the files
    live in a timestamped `..<ts>` directory, `..data` points at it, and each key is a symlink
    `<kid> -> ..data/<kid>`. An update writes a new directory and renames a new `..data` over
    the old one, so a reader sees the old set or the new set, never a mix."""
    stamp = keys_dir / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir()
    for kid, key in keys.items():
        (stamp / kid).write_text(key)
    old = os.readlink(keys_dir / "..data") if (keys_dir / "..data").is_symlink() else None
    tmp = keys_dir / "..data_tmp"
    tmp.symlink_to(stamp.name)
    os.rename(tmp, keys_dir / "..data")
    for kid in keys:
        if not (keys_dir / kid).is_symlink():
            (keys_dir / kid).symlink_to(f"..data/{kid}")
    for entry in keys_dir.iterdir():
        if not entry.name.startswith("..") and entry.name not in keys:
            entry.unlink()
    if old:
        shutil.rmtree(keys_dir / old)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def resign(token: str, kid: str, key: str) -> str:
    """The same claims, signed HS256 with another key and kid (what login-service would issue
    after switching JWT_SIGNING_KID)."""
    header_part, claims_part, _ = token.split(".")
    header = {**b64url_json(header_part), "kid": kid}
    signing_input = f"{b64url(json.dumps(header).encode())}.{claims_part}"
    signature = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def held_port() -> socket.socket:
    """A loopback port bound (not listening) with SO_REUSEPORT, held until Envoy has bound it too
    (Envoy's listeners set SO_REUSEPORT): nothing else can take it in between, as it could take a
    port picked by binding port 0 and closing (issue #20). Close it once Envoy is ready."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    return s


def logged_addr(log: Path, message: str, field: str) -> str | None:
    """The address a service logged it bound (`field=127.0.0.1:PORT` on its `message` line, text
    log format): our services are started on port 0 and say where they are."""
    for line in log.read_text(errors="replace").splitlines():
        if message in line:
            m = re.search(rf"(?:^|\s){field}=(127\.0\.0\.1:[1-9][0-9]*)", line)
            return m.group(1) if m else None
    return None


def request(url, method="GET", headers=None, timeout=5, data=None):
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_for(check, what, deadline=30.0, procs=()):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for p, log in procs:
            assert p.poll() is None, f"{what}: {p.args[0]} exited early: {log.read_text()[-2000:]}"
        try:
            if check():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def stack(overlays, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("gateway")
    r = overlays[OVERLAY]
    held = {k: held_port() for k in ("ingress", "https", "ready")}
    ports = {k: sock.getsockname()[1] for k, sock in held.items()}
    admin_sock = tmp_path / "envoy-admin.sock"
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    secret_keys = config_data(r, "Secret", "jwt-keys")
    publish_keys(keys_dir, secret_keys)
    sock = tmp_path / "sockets" / "ext-authz.sock"
    sock.parent.mkdir()
    base_env = {"PATH": os.environ.get("PATH", "")}

    gateway = pod_spec(r.get("Deployment", "gateway"))
    ext_c = next(c for c in all_containers(gateway) if our_binary(c) == "ext-authz")
    ext_env = {**container_env(r, ext_c), "KEYS_DIR": str(keys_dir), "GRPC_UDS": str(sock),
               "GRPC_ADDR": "127.0.0.1:0", "METRICS_ADDR": "127.0.0.1:0", "LOG_FORMAT": "text"}

    login_c = pod_spec(r.get("Deployment", "login-service"))["containers"][0]
    db = f"sqlite://{tmp_path / 'login.sqlite'}"
    login_env = {**container_env(r, login_c), "KEYS_DIR": str(keys_dir), "DATABASE_URL": db,
                 "HTTP_ADDR": "127.0.0.1:0", "LOG_FORMAT": "text"}

    up_c = pod_spec(r.get("Deployment", "demo-upstream"))["containers"][0]
    up_env = {**container_env(r, up_c), "ADDR": "127.0.0.1:0", "LOG_FORMAT": "text"}

    # The schema and a user, as the migrate Job and the walkthrough's `user add` do.
    login = str(binary("login-service"))
    subprocess.run([login, "migrate"], env={**base_env, **login_env}, check=True, capture_output=True, timeout=60)
    subprocess.run([login, "user", "add", "alice@example.com", "--password-stdin"], input=PASSWORD + "\n",
                   env={**base_env, **login_env}, check=True, capture_output=True, text=True, timeout=60)

    procs = []
    def start(argv, env):
        log = tmp_path / f"{Path(argv[0]).name}-{argv[1] if len(argv) > 1 else ''}.log"
        with open(log, "w") as out:
            p = subprocess.Popen(argv, env={**base_env, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
        procs.append((p, log))
        return log

    def bound(log, message, field):
        found = []
        wait_for(lambda: found.append(logged_addr(log, message, field)) or found[-1], f"{message} ({field})",
                 procs=procs)
        return found[-1]

    # Our services on port 0, each logging where it is; then Envoy with their addresses and the
    # held ports.
    try:
        log = start([login, "serve"], login_env)
        ports["login"] = int(bound(log, "login-service listening", "addr").rsplit(":", 1)[1])
        if "REVOCATION_FEED_URL" in ext_env:
            # The Service DNS name does not resolve here: same path, the local login-service.
            path = urllib.parse.urlsplit(ext_env["REVOCATION_FEED_URL"]).path
            ext_env["REVOCATION_FEED_URL"] = f"http://127.0.0.1:{ports['login']}{path}"
        log = start([str(binary("ext-authz"))], ext_env)
        metrics = bound(log, "ext-authz serving", "metrics_addr")
        log = start([str(binary("demo-upstream"))], up_env)
        ports["upstream"] = int(bound(log, "echo server listening", "addr").rsplit(":", 1)[1])

        cfg = yaml.safe_load(config_data(r, "ConfigMap", envoy_configmap_name(r))["envoy.yaml"])
        cfg["admin"]["address"] = {"pipe": {"path": str(admin_sock)}}
        for listener in cfg["static_resources"]["listeners"]:
            sa = listener["address"]["socket_address"]
            sa["address"] = "127.0.0.1"
            sa["port_value"] = ports["ingress" if listener["name"] == "ingress" else "ready"]
            # The HTTPS address and the TLS chain that matches it move together.
            for extra in listener.get("additional_addresses", []):
                extra["address"]["socket_address"].update(address="127.0.0.1", port_value=ports["https"])
            for chain in listener["filter_chains"]:
                if "destination_port" in chain.get("filter_chain_match", {}):
                    chain["filter_chain_match"]["destination_port"] = ports["https"]
        for cluster in cfg["static_resources"]["clusters"]:
            addr = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            if "pipe" in addr:
                addr["pipe"]["path"] = str(sock)
            elif cluster["name"] == "envoy_admin":
                addr.clear()
                addr["pipe"] = {"path": str(admin_sock)}
            else:
                assert cluster["type"] == "STRICT_DNS"
                addr["socket_address"]["address"] = "localhost"
                cluster["dns_lookup_family"] = "V4_ONLY"
                addr["socket_address"]["port_value"] = ports["login" if cluster["name"] == "login_service" else "upstream"]
        envoy_yaml = tmp_path / "envoy.yaml"
        envoy_yaml.write_text(yaml.safe_dump(cfg))
        # Envoy's working directory holds tls/ as the pod's does: the SDS file from the ConfigMap, a
        # certificate standing in for the Secret's.
        tls_dir = tmp_path / "tls"
        subprocess.run([str(REPO / "scripts" / "dev-tls.sh"), str(tls_dir)], check=True, capture_output=True)
        (tls_dir / "sds.yaml").write_text(config_data(r, "ConfigMap", envoy_configmap_name(r))["tls-sds.yaml"])
        envoy = shutil.which("envoy") or str(REPO / ".venv" / "bin" / "envoy")

        wait_for(lambda: sock.exists(), "ext-authz socket", procs=procs)
        start([envoy, "-c", str(envoy_yaml), "--disable-hot-restart", "--concurrency", "1",
               "--base-id", str(ports["ingress"]), "--log-level", "warn"], {})
        base = f"http://127.0.0.1:{ports['ingress']}"
        ready = f"http://127.0.0.1:{ports['ready']}"
        wait_for(lambda: request(f"{ready}/ready")[0] == 200, "envoy /ready", procs=procs)
        # Envoy has bound the held ports: release ours (a held, not listening, socket takes no
        # connection, but it is not needed any more).
        for held_sock in held.values():
            held_sock.close()
        wait_for(lambda: request(f"http://127.0.0.1:{ports['login']}/readyz")[0] == 200, "login-service /readyz", procs=procs)
        # ext-authz decides only after its first revocation snapshot (503 until then): a plain
        # 401 for an anonymous request shows the whole check path is up.
        wait_for(lambda: request(f"{base}/hello")[0] == 401, "ext-authz deciding", procs=procs)
        yield {"base": base, "ready": ready, "keys_dir": keys_dir, "keys": secret_keys,
               "ext_authz_metrics": f"http://{metrics}/metrics",
               "login": f"http://127.0.0.1:{ports['login']}"}
    finally:
        for held_sock in held.values():
            held_sock.close()
        for p, _ in procs:
            p.terminate()
        for p, _ in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_readiness_listener_exposes_only_ready_and_prometheus_stats(stack):
    assert request(f"{stack['ready']}/ready")[0] == 200
    status, _, body = request(f"{stack['ready']}/stats/prometheus")
    assert status == 200 and b"# TYPE envoy_" in body
    # Admin query parameters never pass (`filter=` runs a regex over every stat name).
    for path in ("/stats", "/config_dump", "/clusters", "/", "/stats/prometheus?filter=.",
                 "/stats/prometheus?usedonly", "/stats/prometheus/"):
        assert request(f"{stack['ready']}{path}")[0] == 404, path
    assert request(f"{stack['ready']}/stats/prometheus", method="POST")[0] == 404
    assert request(f"{stack['ready']}/quitquitquit", method="POST")[0] == 404
    assert request(f"{stack['ready']}/ready", method="POST")[0] == 404


def test_walkthrough_through_the_kubernetes_gateway(stack):
    base = stack["base"]
    basic = base64.b64encode(f"alice@example.com:{PASSWORD}".encode()).decode()
    status, _, body = request(f"{base}/login", method="POST", headers={"Authorization": f"Basic {basic}"})
    assert status == 200, body
    token = json.loads(body)["access_token"]
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert header["kid"] == "key-1"
    assert claims["iss"] == "edge-auth" and claims["aud"] in ("edge-auth", ["edge-auth"])

    status, _, body = request(f"{base}/hello", headers={"Authorization": f"Bearer {token}"})
    assert status == 200, body
    echoed = {k.lower(): v for k, v in json.loads(body)["headers"].items()}
    assert echoed["x-auth-email"] == "alice@example.com" and "x-auth-user-id" in echoed

    status, headers, _ = request(f"{base}/hello")
    assert status == 401
    assert {k.lower(): v for k, v in headers.items()}["www-authenticate"].startswith("Bearer realm=")

    assert request(f"{base}/admin/x", headers={"Authorization": f"Bearer {token}"})[0] == 403


def test_refresh_through_the_kubernetes_gateway_with_the_configmap_lifetimes(stack):
    """Issue #17 in the rendered deployment: POST /token is routed without ext_authz, the
    ConfigMap's ACCESS_TOKEN_TTL (15m) applies to refreshed sessions while TOKEN_TTL (24h) keeps
    the tutorial's login, and a rotation uses the old refresh token up."""
    base = stack["base"]
    basic = base64.b64encode(f"alice@example.com:{PASSWORD}".encode()).decode()
    status, _, body = request(f"{base}/login", method="POST", headers={"Authorization": f"Basic {basic}"})
    assert status == 200 and json.loads(body)["expires_in"] == 24 * 3600 and "refresh_token" not in json.loads(body)
    status, _, body = request(f"{base}/login?refresh=true", method="POST", headers={"Authorization": f"Basic {basic}"})
    assert status == 200, body
    session = json.loads(body)
    assert session["expires_in"] == 15 * 60
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    grant = f"grant_type=refresh_token&refresh_token={session['refresh_token']}".encode()
    status, _, body = request(f"{base}/token", method="POST", data=grant, headers=form)
    assert status == 200, body
    rotated = json.loads(body)
    assert rotated["expires_in"] == 15 * 60 and rotated["refresh_token"] != session["refresh_token"]
    status, _, body = request(f"{base}/hello", headers={"Authorization": f"Bearer {rotated['access_token']}"})
    assert status == 200, body
    # The used token again: a reuse, login-service's RFC 6749 answer (not an edge 401).
    status, _, body = request(f"{base}/token", method="POST", data=grant, headers=form)
    assert (status, json.loads(body)["error"]) == (400, "invalid_grant"), body


def test_key_rotation_in_place_without_restart(stack):
    """The README's rotation, against the running ext-authz: a key added to the mounted Secret
    is accepted without a restart; once the old key is removed, its tokens are refused."""
    base = stack["base"]
    basic = base64.b64encode(f"alice@example.com:{PASSWORD}".encode()).decode()
    status, _, body = request(f"{base}/login", method="POST", headers={"Authorization": f"Basic {basic}"})
    assert status == 200, body
    old_token = json.loads(body)["access_token"]
    (old_kid,) = stack["keys"]
    new_key = os.urandom(32).hex()
    new_token = resign(old_token, "key-2", new_key)
    bearer = lambda t: {"Authorization": f"Bearer {t}"}

    assert request(f"{base}/hello", headers=bearer(new_token))[0] == 401, "unknown kid accepted"
    try:
        # Step 1: add key-2 next to the old key (kubectl apply of the unhashed Secret).
        publish_keys(stack["keys_dir"], {**stack["keys"], "key-2": new_key})
        wait_for(lambda: request(f"{base}/hello", headers=bearer(new_token))[0] == 200, "ext-authz to load key-2")
        assert request(f"{base}/hello", headers=bearer(old_token))[0] == 200, "old tokens must stay valid"
        # Step 4: retire the old key.
        publish_keys(stack["keys_dir"], {"key-2": new_key})
        wait_for(lambda: request(f"{base}/hello", headers=bearer(old_token))[0] == 401, f"ext-authz to drop {old_kid}")
        assert request(f"{base}/hello", headers=bearer(new_token))[0] == 200
    finally:
        publish_keys(stack["keys_dir"], stack["keys"])  # leave the stack as the other tests expect
