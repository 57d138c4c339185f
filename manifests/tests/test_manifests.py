"""The rendered manifests agree with the binaries, with each other and with the local Envoy config.

Each test runs per overlay (minikube, production). What is checked here and not by
kubernetes-validate or checkov: cross-references (ports, Secret/ConfigMap keys, selectors), the
binaries' real command-line interface (clap --help), their own config validation
(`ext-authz --check-config`), and the Kubernetes-only parts of the gateway's Envoy config (the
config itself is rendered from envoy/envoy.yaml.in by envoy/render.py, whose `--check` in
`make test` fails when the committed file is stale).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from conftest import MANIFESTS, OUR_BINARIES, OVERLAYS, REPO, binary, cli_spec

NAMESPACE = "edge-auth"
# Read by tracing-subscriber's EnvFilter, not clap (CONTRACT.md: "RUST_LOG (default info)").
ENV_OUTSIDE_CLAP = {"RUST_LOG"}
K8S_ENVOY = MANIFESTS / "base" / "gateway" / "envoy.yaml"
UDS_PATH = "/sockets/ext-authz.sock"


def pytest_generate_tests(metafunc):
    if "overlay" in metafunc.fixturenames:
        metafunc.parametrize("overlay", OVERLAYS)


@pytest.fixture
def r(overlays, overlay):
    return overlays[overlay]


# ---- helpers --------------------------------------------------------------------------------------

def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def all_containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def long_running_containers(spec: dict) -> list[dict]:
    """Main containers and native sidecars (init containers with restartPolicy Always)."""
    return [c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"] + list(spec["containers"])


def our_binary(container: dict) -> str | None:
    cmd = container.get("command") or []
    if cmd and Path(cmd[0]).name in OUR_BINARIES:
        return Path(cmd[0]).name
    return None


def split_argv(container: dict) -> tuple[tuple[str, ...], list[str]]:
    """(subcommands, option arguments) of command + args after the binary name."""
    argv = list(container.get("command", [])[1:]) + list(container.get("args", []))
    subs = []
    while argv and not argv[0].startswith("-"):
        subs.append(argv.pop(0))
    return tuple(subs), argv


def config_data(r, kind: str, name: str) -> dict[str, str]:
    obj = r.get(kind, name)
    if kind == "Secret":
        data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        data.update(obj.get("stringData") or {})
        return data
    return dict(obj.get("data") or {})


def container_env(r, container: dict) -> dict[str, str | None]:
    """Every env var the container gets; values of secretKeyRef/configMapKeyRef resolved."""
    env: dict[str, str | None] = {}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            env.update(config_data(r, "ConfigMap", src["configMapRef"]["name"]))
        if "secretRef" in src:
            env.update(config_data(r, "Secret", src["secretRef"]["name"]))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "valueFrom" in item:
            ref = item["valueFrom"]
            if "secretKeyRef" in ref:
                env[item["name"]] = config_data(r, "Secret", ref["secretKeyRef"]["name"]).get(ref["secretKeyRef"]["key"])
            elif "configMapKeyRef" in ref:
                env[item["name"]] = config_data(r, "ConfigMap", ref["configMapKeyRef"]["name"]).get(ref["configMapKeyRef"]["key"])
            else:
                env[item["name"]] = None
    return env


def container_ports(container: dict) -> dict[str, int]:
    """name -> number, plus str(number) -> number, so a probe or targetPort can use either."""
    ports = {}
    for p in container.get("ports", []):
        ports[str(p["containerPort"])] = p["containerPort"]
        if "name" in p:
            ports[p["name"]] = p["containerPort"]
    return ports


def labels_match(selector: dict, labels: dict) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        val = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and val not in expr["values"]:
            return False
        if op == "NotIn" and val in expr["values"]:
            return False
        if op == "Exists" and expr["key"] not in labels:
            return False
        if op == "DoesNotExist" and expr["key"] in labels:
            return False
    return True


def pod_labels(r) -> list[tuple[str, dict]]:
    return [(w["metadata"]["name"], w["spec"]["template"]["metadata"].get("labels", {})) for w in r.workloads()]


def envoy_config(r) -> dict:
    return yaml.safe_load(config_data(r, "ConfigMap", envoy_configmap_name(r))["envoy.yaml"])


def envoy_configmap_name(r) -> str:
    gateway = pod_spec(r.get("Deployment", "gateway"))
    return next(v["configMap"]["name"] for v in gateway["volumes"] if v["name"] == "envoy-config")


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


# ---- the binaries accept what the manifests give them ----------------------------------------------

def test_our_containers_only_use_flags_and_env_the_binary_accepts(r):
    checked = 0
    for w in r.workloads():
        for c in all_containers(pod_spec(w)):
            name = our_binary(c)
            if not name:
                continue
            subs, options = split_argv(c)
            spec = cli_spec(name, subs)
            for opt in options:
                if opt.startswith("--"):
                    flag = opt.split("=", 1)[0]
                    assert flag in spec.flags, f"{w['metadata']['name']}/{c['name']}: `{name} {' '.join(subs)}` has no {flag}"
            unknown = set(container_env(r, c)) - spec.envs - ENV_OUTSIDE_CLAP
            assert not unknown, f"{w['metadata']['name']}/{c['name']}: `{name} {' '.join(subs)}` reads no {sorted(unknown)}"
            checked += 1
    assert checked >= 4, "expected ext-authz, login-service (serve + migrate) and demo-upstream containers"


def test_listen_addresses_are_declared_container_ports(r):
    """Every *_ADDR / ADDR setting (or its clap default) is a port the container declares."""
    for w in r.workloads():
        if w["kind"] == "Job":
            continue
        for c in long_running_containers(pod_spec(w)):
            name = our_binary(c)
            if not name:
                continue
            subs, _ = split_argv(c)
            spec = cli_spec(name, subs)
            env = container_env(r, c)
            declared = set(container_ports(c).values())
            for var in sorted(v for v in spec.envs if v == "ADDR" or v.endswith("_ADDR")):
                addr = env.get(var, spec.defaults.get(var))
                if not addr:
                    continue  # optional listener, not enabled (e.g. demo-upstream ADMIN_ADDR)
                assert port_of(addr) in declared, f"{w['metadata']['name']}/{c['name']}: {var}={addr} not in ports {declared}"
                assert not addr.startswith("127."), f"{w['metadata']['name']}/{c['name']}: {var}={addr} unreachable from the kubelet"


def keys_volume(r, workload: str, binary_name: str) -> tuple[str, str, dict[str, str]]:
    """(kind, name, data) of the Secret or ConfigMap mounted at the container's KEYS_DIR: the
    HMAC `jwt-keys` Secret, or in the EdDSA mode (components/eddsa) login-service's
    `jwt-signing-key` Secret and the gateway's `jwt-public-keys` ConfigMap."""
    spec = pod_spec(r.get("Deployment", workload))
    c = next(c for c in all_containers(spec) if our_binary(c) == binary_name)
    keys_dir = container_env(r, c)["KEYS_DIR"]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == keys_dir)
    vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    if "secret" in vol:
        return "Secret", vol["secret"]["secretName"], config_data(r, "Secret", vol["secret"]["secretName"])
    return "ConfigMap", vol["configMap"]["name"], config_data(r, "ConfigMap", vol["configMap"]["name"])


def write_jwt_keys(r, keys_dir: Path, workload: str, binary_name: str) -> Path:
    """The keys the container mounts at KEYS_DIR, written out as a keys directory."""
    keys_dir.mkdir()
    for kid, key in keys_volume(r, workload, binary_name)[2].items():
        (keys_dir / kid).write_text(key)
    return keys_dir


def run_check_config(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Runs `argv` (ending in `--check-config`) with only `env` and PATH set."""
    return subprocess.run(
        argv,
        env={"PATH": os.environ.get("PATH", ""), **env}, capture_output=True, text=True, timeout=30,
    )


def test_ext_authz_check_config_accepts_the_rendered_env(r, tmp_path):
    """`ext-authz --check-config` with the rendered env: values parse and the keys load."""
    gateway = pod_spec(r.get("Deployment", "gateway"))
    c = next(c for c in all_containers(gateway) if our_binary(c) == "ext-authz")
    spec = cli_spec("ext-authz", ())
    # Why an assertion, not a skip: a help text the parser misreads (or a renamed flag) would
    # otherwise drop this test silently (issue #20).
    assert "--check-config" in spec.flags, (
        f"ext-authz --help lists no --check-config: {sorted(spec.flags)}"
    )
    keys_dir = write_jwt_keys(r, tmp_path / "keys", "gateway", "ext-authz")
    env = {k: v for k, v in container_env(r, c).items() if v is not None}
    mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "jwt-keys")
    assert env["KEYS_DIR"] == mount
    env["KEYS_DIR"] = str(keys_dir)
    env["GRPC_UDS"] = str(tmp_path / "ext-authz.sock")
    proc = run_check_config([str(binary("ext-authz")), "--check-config"], env)
    assert proc.returncode == 0, f"ext-authz --check-config: {proc.stderr.strip()}"


def test_login_service_check_config_accepts_the_rendered_env(r, tmp_path):
    dep = pod_spec(r.get("Deployment", "login-service"))
    c = next(c for c in dep["containers"] if our_binary(c) == "login-service")
    subs, _ = split_argv(c)
    spec = cli_spec("login-service", subs)
    assert "--check-config" in spec.flags, (
        f"login-service {' '.join(subs)} --help lists no --check-config: {sorted(spec.flags)}"
    )
    keys_dir = write_jwt_keys(r, tmp_path / "keys", "login-service", "login-service")
    env = {k: v for k, v in container_env(r, c).items() if v is not None}
    env["KEYS_DIR"] = str(keys_dir)
    # DATABASE_URL stays the rendered one: --check-config parses it but opens no connection.
    proc = run_check_config([str(binary("login-service")), *subs, "--check-config"], env)
    assert proc.returncode == 0, f"login-service --check-config: {proc.stderr.strip()}"


# ---- ports: containers, Services, probes -----------------------------------------------------------

def test_services_select_pods_and_target_declared_ports(r):
    for svc in r.of_kind("Service"):
        selector = svc["spec"]["selector"]
        pods = [w for w in r.workloads() if labels_match({"matchLabels": selector}, w["spec"]["template"]["metadata"]["labels"])]
        assert pods, f"Service {svc['metadata']['name']} selects no pod"
        for p in svc["spec"]["ports"]:
            target = str(p.get("targetPort", p["port"]))
            for w in pods:
                ports = {}
                for c in long_running_containers(pod_spec(w)):
                    ports.update(container_ports(c))
                assert target in ports, f"Service {svc['metadata']['name']} targetPort {target} not declared by {w['metadata']['name']}"


def test_probes_use_declared_ports(r):
    for w in r.workloads():
        for c in long_running_containers(pod_spec(w)):
            ports = container_ports(c)
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.get(kind)
                if w["kind"] == "Job":
                    continue
                assert probe or kind == "startupProbe", f"{w['metadata']['name']}/{c['name']} has no {kind}"
                if not probe:
                    continue
                for handler in ("httpGet", "tcpSocket", "grpc"):
                    if handler in probe:
                        port = str(probe[handler]["port"])
                        assert port in ports, f"{w['metadata']['name']}/{c['name']} {kind} port {port} not declared"


def test_ext_authz_grpc_probe_is_its_grpc_port(r):
    gateway = pod_spec(r.get("Deployment", "gateway"))
    c = next(c for c in all_containers(gateway) if our_binary(c) == "ext-authz")
    env = container_env(r, c)
    grpc_port = port_of(env.get("GRPC_ADDR") or cli_spec("ext-authz", ()).defaults["GRPC_ADDR"])
    assert c["readinessProbe"]["grpc"]["port"] == grpc_port
    # Startup and liveness must not follow gRPC health: with fail-closed (or before the first
    # revocation snapshot) it is NOT_SERVING, and restarting ext-authz would not bring
    # login-service back.
    assert c["startupProbe"]["tcpSocket"]["port"] == grpc_port
    assert c["livenessProbe"]["tcpSocket"]["port"] == grpc_port


def test_revocation_feed_token_is_wired_into_both_containers(r):
    """Issue #11 item 10: the feed lists revoked subjects and token ids, so both ends get the
    same generated token from one Secret key (login-service refuses to start without it on a
    non-loopback listener)."""
    gateway = pod_spec(r.get("Deployment", "gateway"))
    ext = next(c for c in all_containers(gateway) if our_binary(c) == "ext-authz")
    login = next(c for c in pod_spec(r.get("Deployment", "login-service"))["containers"]
                 if our_binary(c) == "login-service")
    refs = []
    for c in (ext, login):
        item = next((e for e in c.get("env", []) if e["name"] == "REVOCATION_FEED_TOKEN"), None)
        assert item, f"{c['name']} does not get REVOCATION_FEED_TOKEN"
        refs.append(item["valueFrom"]["secretKeyRef"])
    assert refs[0] == refs[1], refs
    assert refs[0]["key"] == "REVOCATION_FEED_TOKEN" and not refs[0].get("optional")
    token = container_env(r, ext)["REVOCATION_FEED_TOKEN"]
    assert token == container_env(r, login)["REVOCATION_FEED_TOKEN"]
    assert token and len(token) >= 32, "a generated token, not a placeholder"


def test_fail_closed_is_explicit_and_startup_does_not_wait_for_the_feed(r):
    """Issue #11 item 6: fail-open is the stated default, and a first deploy (login-service not
    up yet) converges without restarts: the startup probe asks only "is ext-authz listening"
    (keys are loaded before it binds); readiness ("can decide") follows gRPC health."""
    gateway = pod_spec(r.get("Deployment", "gateway"))
    c = next(c for c in all_containers(gateway) if our_binary(c) == "ext-authz")
    env = container_env(r, c)
    assert env.get("REVOCATION_FAIL_CLOSED") == "false", "the fail-closed choice must be explicit"
    assert "tcpSocket" in c["startupProbe"] and "grpc" not in c["startupProbe"]
    assert "grpc" in c["readinessProbe"]
    # Before the first snapshot, fail-open waits REVOCATION_STARTUP_WAIT: within two readiness
    # periods of the startup probe's budget so the pod turns Ready without a restart.
    wait = env.get("REVOCATION_STARTUP_WAIT") or cli_spec("ext-authz", ()).defaults["REVOCATION_STARTUP_WAIT"]
    assert wait.endswith("s") and int(wait[:-1]) <= 30, wait


def test_revocation_feed_url_points_at_the_login_service(r):
    gateway = pod_spec(r.get("Deployment", "gateway"))
    c = next(c for c in all_containers(gateway) if our_binary(c) == "ext-authz")
    url = urllib.parse.urlsplit(container_env(r, c)["REVOCATION_FEED_URL"])
    service = r.get("Service", "login-service")
    assert url.hostname == service["metadata"]["name"]
    assert url.port in [p["port"] for p in service["spec"]["ports"]]
    assert url.path == "/revocations"


def test_envoy_listeners_match_container_ports_and_probes(r):
    cfg = envoy_config(r)
    gateway = pod_spec(r.get("Deployment", "gateway"))
    envoy = next(c for c in gateway["containers"] if c["name"] == "envoy")
    ports = container_ports(envoy)
    listeners = {l["name"]: l["address"]["socket_address"] for l in cfg["static_resources"]["listeners"]}
    assert listeners["ingress"] == {"address": "0.0.0.0", "port_value": ports["http"]}
    assert listeners["ready"] == {"address": "0.0.0.0", "port_value": ports["ready"]}
    assert envoy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "ready"}
    # The admin interface never leaves the pod.
    assert cfg["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    # The config is mounted where Envoy is told to read it.
    mount = next(m["mountPath"] for m in envoy["volumeMounts"] if m["name"] == "envoy-config")
    args = envoy["args"]
    assert args[args.index("--config-path") + 1] == f"{mount}/envoy.yaml"


def test_envoy_clusters_point_at_rendered_services(r):
    cfg = envoy_config(r)
    for cluster in cfg["static_resources"]["clusters"]:
        if cluster["type"] != "STRICT_DNS":
            continue
        for ep in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]:
            sa = ep["endpoint"]["address"]["socket_address"]
            name, ns, *_ = sa["address"].split(".")
            assert ns == NAMESPACE and sa["address"] == f"{name}.{NAMESPACE}.svc.cluster.local"
            svc = r.get("Service", name)
            assert sa["port_value"] in [p["port"] for p in svc["spec"]["ports"]], f"{name}:{sa['port_value']}"


def test_uds_is_shared_between_envoy_and_ext_authz(r):
    cfg = envoy_config(r)
    ext = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == "ext_authz")
    path = ext["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]["path"]
    gateway = pod_spec(r.get("Deployment", "gateway"))
    ext_authz = next(c for c in all_containers(gateway) if our_binary(c) == "ext-authz")
    assert ext_authz.get("restartPolicy") == "Always", "ext-authz must be a native sidecar"
    assert container_env(r, ext_authz)["GRPC_UDS"] == path
    socket_dir = str(Path(path).parent)
    volumes = {v["name"]: v for v in gateway["volumes"]}
    for c in all_containers(gateway):
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        assert socket_dir in mounts, f"{c['name']} does not mount {socket_dir}"
        assert "emptyDir" in volumes[mounts[socket_dir]]


# ---- Secrets and ConfigMaps ------------------------------------------------------------------------

def test_referenced_configmaps_and_secrets_exist_with_their_keys(r):
    for w in r.workloads():
        spec = pod_spec(w)
        where = w["metadata"]["name"]
        for c in all_containers(spec):
            for src in c.get("envFrom", []):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in src:
                        assert r.has(kind, src[key]["name"]), f"{where}: missing {kind} {src[key]['name']}"
            for item in c.get("env", []):
                ref = item.get("valueFrom", {})
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if key in ref:
                        data = config_data(r, kind, ref[key]["name"])
                        assert ref[key]["key"] in data, f"{where}: {kind} {ref[key]['name']} has no key {ref[key]['key']}"
            volume_names = {v["name"] for v in spec.get("volumes", [])}
            volume_names |= {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
            for m in c.get("volumeMounts", []):
                assert m["name"] in volume_names, f"{where}/{c['name']}: no volume {m['name']}"
        for v in spec.get("volumes", []):
            for kind, key, name_key in (("ConfigMap", "configMap", "name"), ("Secret", "secret", "secretName")):
                if key in v:
                    data = config_data(r, kind, v[key][name_key])
                    for item in v[key].get("items", []):
                        assert item["key"] in data, f"{where}: {kind} {v[key][name_key]} has no key {item['key']}"
        for vct in w["spec"].get("volumeClaimTemplates", []):
            assert any(m["name"] == vct["metadata"]["name"] for c in all_containers(spec) for m in c.get("volumeMounts", []))


def test_jwt_keys_are_valid_and_contain_the_signing_kid(r):
    if not r.has("Secret", "jwt-keys"):
        # The EdDSA mode has no HMAC key at all: its keys are checked in test_eddsa.py.
        assert r.has("Secret", "jwt-signing-key"), f"{r.overlay}: neither jwt-keys nor jwt-signing-key"
        return
    keys = config_data(r, "Secret", "jwt-keys")
    assert keys, "jwt-keys is empty"
    for kid, key in keys.items():
        assert not kid.startswith(".") and len(kid) <= 64
        assert len(key.encode()) >= 32, f"key {kid} shorter than 32 bytes"
        assert not key.endswith("\n")
    # No hash suffix: rotation updates the mounted directory in place (see the overlays).
    assert r.get("Secret", "jwt-keys")["metadata"]["name"] == "jwt-keys"
    login = pod_spec(r.get("Deployment", "login-service"))["containers"][0]
    env = container_env(r, login)
    assert env["JWT_SIGNING_KID"] in keys
    # Both services read the same directory, mounted from the same Secret.
    gateway = pod_spec(r.get("Deployment", "gateway"))
    for spec, c in ((pod_spec(r.get("Deployment", "login-service")), login),
                    (gateway, next(c for c in all_containers(gateway) if our_binary(c) == "ext-authz"))):
        keys_dir = container_env(r, c)["KEYS_DIR"]
        mount = next(m for m in c["volumeMounts"] if m["mountPath"] == keys_dir)
        assert "subPath" not in mount, "a subPath mount never sees Secret updates"
        vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        assert vol["secret"]["secretName"] == "jwt-keys"


def test_database_url_matches_the_database(r):
    login = pod_spec(r.get("Deployment", "login-service"))["containers"][0]
    job = pod_spec(r.get("Job", "login-service-migrate"))["containers"][0]
    url = container_env(r, login)["DATABASE_URL"]
    assert url == container_env(r, job)["DATABASE_URL"], "login-service and the migrate Job use different databases"
    u = urlparse(url)
    assert u.scheme == "mysql" and u.path == "/auth" and u.username == "auth_user" and u.password
    if r.has("StatefulSet", "mysql"):
        sts = r.get("StatefulSet", "mysql")
        env = {e["name"]: e.get("value") for e in pod_spec(sts)["containers"][0]["env"]}
        assert env["MARIADB_DATABASE"] == "auth" and env["MARIADB_USER"] == u.username
        host = f"{sts['spec']['serviceName']}.{NAMESPACE}.svc.cluster.local"
        assert u.hostname == host
        svc = r.get("Service", sts["spec"]["serviceName"])
        assert svc["spec"]["clusterIP"] == "None"
        assert u.port in [p["port"] for p in svc["spec"]["ports"]]
        creds_vol = next(v for v in pod_spec(sts)["volumes"] if v["name"] == "credentials")
        creds = config_data(r, "Secret", creds_vol["secret"]["secretName"])
        assert creds["password"] == u.password, "DATABASE_URL and MariaDB disagree on the password"


def test_no_secret_material_outside_secrets(r):
    secrets = [v for s in r.of_kind("Secret") for v in config_data(r, "Secret", s["metadata"]["name"]).values()]
    for cm in r.of_kind("ConfigMap"):
        for value in (cm.get("data") or {}).values():
            for secret in secrets:
                assert secret not in value, f"ConfigMap {cm['metadata']['name']} contains a Secret value"


# ---- hardening that every workload shares -------------------------------------------------------

def test_every_workload_is_hardened(r):
    for w in r.workloads():
        spec = pod_spec(w)
        where = w["metadata"]["name"]
        assert w["metadata"].get("namespace") == NAMESPACE
        assert spec.get("automountServiceAccountToken") is False, where
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        for c in all_containers(spec):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", (where, c["name"])
            for what in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][what]), (where, c["name"], what)
            assert ":latest" not in c["image"] and not c["image"].endswith("-latest"), c["image"]


def test_pdbs_and_hpas_target_existing_deployments(r):
    for name in ("gateway", "login-service"):
        dep = r.get("Deployment", name)
        labels = dep["spec"]["template"]["metadata"]["labels"]
        pdb = r.get("PodDisruptionBudget", name)
        assert labels_match(pdb["spec"]["selector"], labels)
        assert pdb["spec"]["minAvailable"] < dep["spec"]["replicas"], "the PDB would block every drain"
        hpa = r.get("HorizontalPodAutoscaler", name)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert hpa["spec"]["minReplicas"] <= dep["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]


# ---- NetworkPolicies --------------------------------------------------------------------------------

def _policies_for(r, labels: dict, direction: str) -> list[dict]:
    return [p for p in r.of_kind("NetworkPolicy")
            if direction in p["spec"]["policyTypes"] and labels_match(p["spec"]["podSelector"], labels)]


def _allowed(r, src_labels: dict, dst_labels: dict, port: int) -> bool:
    """Whether a pod with src_labels may open a TCP connection to a pod with dst_labels:port."""
    def peer_ok(rules, peer_labels, port_):
        for rule in rules:
            ports = [p.get("port") for p in rule.get("ports", [])] or [port_]
            if port_ not in ports:
                continue
            peers = rule.get("from", rule.get("to"))
            if peers is None:
                return True
            for peer in peers:
                if "podSelector" in peer and "namespaceSelector" not in peer and labels_match(peer["podSelector"], peer_labels):
                    return True
        return False
    egress = any(peer_ok(p["spec"].get("egress", []), dst_labels, port) for p in _policies_for(r, src_labels, "Egress"))
    ingress = any(peer_ok(p["spec"].get("ingress", []), src_labels, port) for p in _policies_for(r, dst_labels, "Ingress"))
    return egress and ingress


def test_default_deny_covers_every_pod(r):
    deny = r.get("NetworkPolicy", "default-deny-all")
    assert deny["spec"]["podSelector"] == {} and set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    for sel in [p["spec"]["podSelector"] for p in r.of_kind("NetworkPolicy")]:
        assert sel == {} or any(labels_match(sel, labels) for _, labels in pod_labels(r)), f"policy selects no pod: {sel}"


def test_network_flows(r):
    labels = dict(pod_labels(r))
    gw, login, migrate = labels["gateway"], labels["login-service"], labels["login-service-migrate"]
    assert _allowed(r, gw, login, 5000)
    assert not _allowed(r, login, gw, 8080)
    if "demo-upstream" in labels:
        up = labels["demo-upstream"]
        assert _allowed(r, gw, up, 8000)
        assert not _allowed(r, login, up, 8000)
        assert not _allowed(r, up, login, 5000)
    if "mysql" in labels:
        db = labels["mysql"]
        assert _allowed(r, login, db, 3306) and _allowed(r, migrate, db, 3306)
        assert not _allowed(r, gw, db, 3306)
        if "demo-upstream" in labels:
            assert not _allowed(r, labels["demo-upstream"], db, 3306)
    else:
        # Managed database: egress to its address block only, from login-service and the Job.
        for who in (login, migrate):
            rules = [rule for p in _policies_for(r, who, "Egress") for rule in p["spec"].get("egress", [])]
            assert any(any("ipBlock" in peer for peer in rule.get("to", [])) and
                       [p["port"] for p in rule["ports"]] == [3306] for rule in rules)
    # Nobody but the gateway's listener is open to the world; the gateway only on 8080 and 8443
    # (HTTPS, the same listener's TLS address).
    gw_ingress = [rule for p in _policies_for(r, gw, "Ingress") for rule in p["spec"].get("ingress", [])]
    assert gw_ingress and all([p["port"] for p in rule["ports"]] == [8080, 8443] for rule in gw_ingress)
    for name, lbls in labels.items():
        if name == "gateway":
            continue
        for p in _policies_for(r, lbls, "Ingress"):
            for rule in p["spec"].get("ingress", []):
                assert rule.get("from"), f"{p['metadata']['name']} admits anyone to {name}"
    # DNS for everyone, to kube-dns only.
    dns = r.get("NetworkPolicy", "allow-dns-egress")
    peer = dns["spec"]["egress"][0]["to"][0]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


# ---- Envoy: the Kubernetes-only parts of the gateway config -------------------------------------

def test_k8s_envoy_readiness_exposes_only_get_ready_and_prometheus_stats_of_the_loopback_admin():
    k8s = yaml.safe_load(K8S_ENVOY.read_text())
    # The Kubernetes-only pieces, in full: readiness proxies GET /ready to the loopback admin, and
    # GET /stats/prometheus exactly (no query string: the `:path` header includes it) for the
    # monitoring component's scrape (issue #14).
    ready = next(l for l in k8s["static_resources"]["listeners"] if l["name"] == "ready")
    hcm = ready["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0]["match"]["path"] == "/ready" and routes[0]["route"]["cluster"] == "envoy_admin"
    assert routes[1]["match"] == {"path": "/stats/prometheus", "headers": [
        {"name": ":method", "string_match": {"exact": "GET"}},
        {"name": ":path", "string_match": {"exact": "/stats/prometheus"}}]}
    assert routes[1]["route"]["cluster"] == "envoy_admin"
    assert routes[2] == {"match": {"prefix": "/"}, "direct_response": {"status": 404}}
    assert len(routes) == 3
    assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.router"]
    admin = next(c for c in k8s["static_resources"]["clusters"] if c["name"] == "envoy_admin")
    admin_sa = admin["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert admin_sa == k8s["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}


def test_k8s_envoy_reaches_ext_authz_on_the_pod_socket_and_services_by_dns():
    k8s = yaml.safe_load(K8S_ENVOY.read_text())
    clusters = {c["name"]: c for c in k8s["static_resources"]["clusters"]}
    address = lambda c: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address(clusters["ext_authz"]) == {"pipe": {"path": UDS_PATH}}
    for name, host, port in (("login_service", "login-service", 5000), ("demo_upstream", "demo-upstream", 8000)):
        assert clusters[name]["type"] == "STRICT_DNS"
        assert address(clusters[name]) == {"socket_address": {"address": f"{host}.{NAMESPACE}.svc.cluster.local",
                                                              "port_value": port}}


def overlay_envoy(overlay: str) -> Path:
    """The Envoy config an overlay ships: its own rendered variant (its limits), else the base's."""
    own = MANIFESTS / "overlays" / overlay / "envoy.yaml"
    return own if own.is_file() else K8S_ENVOY


def test_rendered_envoy_configmap_is_the_k8s_file(r):
    assert config_data(r, "ConfigMap", envoy_configmap_name(r))["envoy.yaml"] == overlay_envoy(r.overlay).read_text()


def _without_limits(config: dict) -> dict:
    """The config with the per-deployment values (render.py LIMITS) blanked out."""
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["xff_num_trusted_hops"] = None
    for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        limit = route.get("typed_per_filter_config", {}).get("login_ratelimit")
        if limit:
            limit["token_bucket"] = limit["descriptors"][0]["token_bucket"] = None
            limit["max_dynamic_descriptors"] = None
    return config


def test_overlay_envoy_configs_differ_from_the_base_only_in_limits():
    # An overlay's own Envoy config (production: its login rate limits) is the kubernetes variant
    # with other values: the policy the e2e tests exercise on the local variant is the same.
    base = _without_limits(yaml.safe_load(K8S_ENVOY.read_text()))
    for overlay in OVERLAYS:
        own = overlay_envoy(overlay)
        assert _without_limits(yaml.safe_load(own.read_text())) == base, own


def test_k8s_envoy_rate_limits_login_per_address_and_globally():
    k8s = yaml.safe_load(K8S_ENVOY.read_text())
    hcm = k8s["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["use_remote_address"] is True and hcm["xff_num_trusted_hops"] == 0
    routes = {r["name"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}
    limit = routes["login"]["typed_per_filter_config"]["login_ratelimit"]
    # A bucket per IPv4 address and per IPv6 /64 (one host holds a /64: a bucket per IPv6
    # address would let it rotate through them and drain the per-Envoy bucket).
    masked = {"masked_remote_address": {"v4_prefix_mask_len": 32, "v6_prefix_mask_len": 64}}
    assert limit["rate_limits"] == [{"actions": [masked]}]
    assert limit["descriptors"][0]["entries"] == [{"key": "masked_remote_address"}]
    assert limit["token_bucket"]["max_tokens"] > 0 and limit["max_dynamic_descriptors"] > 0
    # Only the login route is limited at the edge; the identity limit is off.
    assert [n for n, r in routes.items() if "login_ratelimit" in r.get("typed_per_filter_config", {})] == ["login"]
    assert "identity_ratelimit" not in [f["name"] for f in hcm["http_filters"]]


def test_rendered_envoy_config_validates(r, tmp_path):
    envoy = shutil.which("envoy") or str(REPO / ".venv" / "bin" / "envoy")
    if not Path(envoy).is_file():
        pytest.fail("no envoy binary: run scripts/bootstrap.sh")
    cfg = tmp_path / "envoy.yaml"
    data = config_data(r, "ConfigMap", envoy_configmap_name(r))
    cfg.write_text(data["envoy.yaml"])
    # The HTTPS chain's SDS file, where the pod has it: tls/sds.yaml under the working directory.
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "sds.yaml").write_text(data["tls-sds.yaml"])
    # --mode validate neither binds listeners nor connects to the pipe, and resolves no DNS;
    # the socket directory need not exist.
    proc = subprocess.run([envoy, "--mode", "validate", "-c", str(cfg)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_gateway_image_is_the_tested_envoy_version(r):
    gateway = pod_spec(r.get("Deployment", "gateway"))
    image = next(c for c in gateway["containers"] if c["name"] == "envoy")["image"]
    assert image.startswith("envoyproxy/envoy")
    if "@sha256:" not in image:
        assert image.endswith(":distroless-v1.40.0"), image


def test_mounted_secrets_are_readable_by_the_pod_user(r):
    """Secret files are root-owned; mode 0440 needs the pod's fsGroup for a non-root reader."""
    for w in r.workloads():
        spec = pod_spec(w)
        for v in spec.get("volumes", []):
            source = v.get("secret") or (v.get("projected") if any(
                "secret" in s for s in v.get("projected", {}).get("sources", [])) else None)
            if source is not None:
                mode = source.get("defaultMode", 0o644)
                assert mode & 0o004 == 0, f"{w['metadata']['name']}: Secret {v['name']} is world-readable"
                assert mode & 0o040 and spec["securityContext"].get("fsGroup"), \
                    f"{w['metadata']['name']}: Secret {v['name']} unreadable without fsGroup + group read"


def test_readme_commands_use_real_subcommands_and_flags():
    """The walkthrough's `kubectl exec ... -- login-service ...` lines work with the real CLI."""
    import re
    import shlex

    lines = [l for l in (MANIFESTS / "README.md").read_text().splitlines() if "-- login-service " in l]
    assert any("user add" in l and "--password-stdin" in l for l in lines)
    for line in lines:
        argv = shlex.split(line.split("-- login-service ", 1)[1].split("#")[0])
        subs = []
        while argv and not argv[0].startswith("-") and len(subs) < 2 and re.fullmatch(r"[a-z]+", argv[0]):
            subs.append(argv.pop(0))
        spec = cli_spec("login-service", tuple(subs))
        for arg in argv:
            if arg.startswith("--"):
                assert arg.split("=")[0] in spec.flags, f"README: login-service {' '.join(subs)} has no {arg}"
