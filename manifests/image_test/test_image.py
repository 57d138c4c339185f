"""`make image-test` (issue #19; not part of `make test`, it takes minutes and needs podman):
the built image, checked for what scanners and operators expect, then run the way the
manifests run it: the minikube overlay's gateway (Envoy + ext-authz sharing only the socket
volume), login-service (after its migrate Job) and the demo upstream as one podman pod whose
commands podman_pod.py generates from the rendered YAML. The README's curl walkthrough is then
driven against the pod's published port.

Environment: IMAGE (default edge-auth:dev), PODMAN (default podman). Ports: podman picks free
127.0.0.1 ports for the pod, so this runs beside `make run` and the e2e tests.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from conftest import OUR_BINARIES, render_all  # noqa: E402
from podman_pod import DATA_MOUNT, plan, publish  # noqa: E402
from test_gateway_runtime import resign  # noqa: E402

PODMAN = os.environ.get("PODMAN", "podman")
IMAGE = os.environ.get("IMAGE", "edge-auth:dev")
OVERLAY = "minikube"
ALICE = ("alice@example.com", "correct horse battery staple")
ROOT = ("root@example.com", "another correct horse battery")


def podman(*args: str, input: str | None = None, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([PODMAN, *args], input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {shlex.join(args)[:300]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


@pytest.fixture(scope="module")
def objs(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("rendered")
    render_all(out)
    return [d for d in yaml.safe_load_all((out / f"{OVERLAY}.yaml").read_text()) if d]


# ---- the image itself ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> dict[str, tarfile.TarInfo | bytes]:
    """The image's filesystem (podman export of a created, never started container)."""
    out = tmp_path_factory.mktemp("image") / "fs.tar"
    cid = podman("create", "--pull=never", "--entrypoint", '["never-started"]', IMAGE).stdout.strip()
    try:
        podman("export", "-o", str(out), cid)
    finally:
        podman("rm", cid, check=False)
    with tarfile.open(out) as tar:
        members = {m.name.lstrip("./"): m for m in tar.getmembers()}
        status = tar.extractfile(members["var/lib/dpkg/status"]).read().decode()
        secret_like = []
        for name, m in members.items():
            if m.isfile() and m.size < 1_000_000 and not name.startswith(("usr/share/ca-certificates/", "etc/ssl/certs/")):
                if b"PRIVATE KEY-----" in tar.extractfile(m).read():
                    secret_like.append(name)
    return {"members": members, "dpkg_status": status, "secret_like": secret_like}


def dpkg_installed(status: str) -> set[str]:
    installed = set()
    for block in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(" "))
        if fields.get("Status") == "install ok installed":
            installed.add(fields["Package"])
    return installed


def test_image_holds_the_binaries_their_libraries_and_nothing_else(image_files):
    members = image_files["members"]
    for name in OUR_BINARIES:
        m = members.get(f"usr/local/bin/{name}")
        assert m is not None and m.isfile() and m.mode & 0o111, f"/usr/local/bin/{name} missing or not executable"
    installed = dpkg_installed(image_files["dpkg_status"])
    # From Debian packages, so scanners see them in dpkg status: the client library login-service
    # links and the CA bundle for TLS to a managed database.
    assert {"libmariadb3", "ca-certificates"} <= installed
    for compiler in ("gcc", "cpp", "g++", "libc6-dev", "libmariadb-dev", "pkg-config"):
        assert compiler not in installed, f"build tool {compiler} in the runtime image"
    for path in ("usr/bin/gcc", "usr/bin/cc", "usr/local/cargo", "usr/local/rust", "usr/local/bin/cargo", "usr/bin/rustc"):
        assert path not in members, f"{path} in the runtime image"
    assert "src" not in members, "the build's /src in the runtime image"
    leaked = [n for n in members if n.endswith((".rs", "Cargo.toml", "Cargo.lock", ".sqlite", "jwt-keys.env",
                                                "database-url", "revocation-feed-token", "recipe.json"))]
    assert not leaked, f"sources or secrets in the image: {leaked[:10]}"
    assert not image_files["secret_like"], f"private keys in the image: {image_files['secret_like']}"


def test_image_config_runs_as_the_pods_do_with_oci_labels():
    config = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    assert config["Config"].get("User") == "65532:65532", "USER must be the pods' numeric 65532:65532"
    labels = config["Config"].get("Labels") or {}
    for key in ("org.opencontainers.image.title", "org.opencontainers.image.description",
                "org.opencontainers.image.licenses"):
        assert labels.get(key), f"OCI label {key} missing"
    assert labels["org.opencontainers.image.title"] == "edge-auth"


def test_each_binary_starts_as_65532_on_a_read_only_root_without_capabilities():
    """The manifests' hardening, nothing writable: the binaries (login-service with
    libmariadb.so.3 loaded) still start, and the process really is unprivileged."""
    hardened = ["run", "--rm", "--pull=never", "--user", "65532:65532", "--read-only", "--read-only-tmpfs=false",
                "--cap-drop", "all", "--security-opt", "no-new-privileges", "--network", "none"]
    for name in OUR_BINARIES:
        proc = podman(*hardened, "--entrypoint", json.dumps([name]), IMAGE, "--version")
        assert name in proc.stdout, proc.stdout
    status = podman(*hardened, "--entrypoint", '["cat"]', IMAGE, "/proc/self/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Uid"].split()[0] == "65532" and fields["Gid"].split()[0] == "65532"
    assert fields["CapEff"].strip() == "0000000000000000" and fields["CapPrm"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1"
    touch = podman(*hardened, "--entrypoint", '["touch"]', IMAGE, "/tmp/x", check=False)
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr


# ---- the pod ------------------------------------------------------------------------------------

def request(url: str, method: str = "GET", headers: dict | None = None, data: bytes | None = None):
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_for(check, what: str, deadline: float = 90.0, logs=lambda: ""):
    """Polls `check` until true; the deadline only guards against a hang."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if check():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}\n{logs()}")


def basic(user: tuple[str, str]) -> dict:
    import base64
    return {"Authorization": "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()}


@pytest.fixture(scope="module")
def pod(objs, tmp_path_factory):
    name = f"edge-auth-image-test-{os.getpid()}"
    host_dir = tmp_path_factory.mktemp("pod")
    os.chmod(host_dir, 0o755)
    # The overlay names edge-auth:dev; IMAGE may name another build of the same Dockerfile.
    p = plan(objs, name, {"edge-auth:dev": IMAGE}, host_dir)
    fs_groups = {w["metadata"]["name"]: w["spec"]["template"]["spec"].get("securityContext", {}).get("fsGroup", 0)
                 for w in objs if w["kind"] in ("Deployment", "Job")}

    def logs() -> str:
        out = []
        for c in p.containers:
            proc = podman("logs", "--tail", "30", f"{name}-{c.name}", check=False)
            out.append(f"--- {c.name}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        return "\n".join(out)

    try:
        for v in p.volumes:
            if v.create:
                podman(*v.create)
            elif v.owner is not None:
                Path(v.source).mkdir()
                os.chown(v.source, v.owner, v.owner)
                os.chmod(v.source, 0o700)
            else:
                publish(Path(v.source), v.files, fs_groups[Path(v.source).parent.name], v.mountpoints)
        podman(*p.create)
        for c in p.containers:
            if c.one_shot:
                # A Job: runs to completion before the Deployments (the Job's retries are not needed here).
                argv = [a for a in c.argv if a != "-d"]
                argv.insert(1, "--rm")
                podman(*argv)
                continue
            if c.workload == "gateway" and not c.sidecar:
                sidecar = next(s for s in p.containers if s.workload == "gateway" and s.sidecar)
                port = sidecar.startup_tcp_port
                # The native sidecar's startup probe gates the main container, as in the kubelet.
                wait_for(lambda: podman("exec", f"{name}-{sidecar.name}", "bash", "-c",
                                        f"exec 3<>/dev/tcp/127.0.0.1/{port}", check=False).returncode == 0,
                         f"{sidecar.name} startup probe (tcp {port})", logs=logs)
            podman(*c.argv)
            if c.workload == "login-service":
                # The walkthrough's step 5, through the same exec and the same CLI.
                for user, admin in ((ALICE, []), (ROOT, ["--admin"])):
                    podman("exec", "-i", f"{name}-login-service", "login-service", "user", "add", user[0], *admin,
                           "--password-stdin", input=user[1] + "\n")
        port = {int(line.split("/")[0]): line.rsplit(":", 1)[1]
                for line in podman("port", f"{name}-envoy").stdout.splitlines()}
        base = f"http://127.0.0.1:{port[8080]}"
        wait_for(lambda: request(f"http://127.0.0.1:{port[8081]}/ready")[0] == 200, "envoy /ready", logs=logs)
        wait_for(lambda: request(f"{base}/hello")[0] == 401, "ext-authz deciding (401 without a token)", logs=logs)
        keys_volume = next(v for v in p.volumes if v.source.endswith("gateway/jwt-keys"))
        yield {"name": name, "plan": p, "base": base, "logs": logs, "keys_volume": keys_volume,
               "fs_group": fs_groups["gateway"]}
    finally:
        podman("pod", "rm", "-f", name, check=False)
        for v in p.volumes:
            if v.create:
                podman("volume", "rm", "-f", v.source, check=False)


def inspect(name: str) -> dict:
    return json.loads(podman("inspect", name).stdout)[0]


def test_pod_containers_run_as_the_manifests_say(pod, objs):
    """Every container: the manifest's user, a read-only root with nothing writable but the
    manifests' volumes, no capabilities, no privilege escalation; Envoy and ext-authz share
    exactly one volume, the socket's."""
    name = pod["name"]
    mounts = {}
    for c in pod["plan"].containers:
        if c.one_shot:
            continue
        info = inspect(f"{name}-{c.name}")
        assert info["Config"]["User"] == "65532:65532", c.name
        assert info["HostConfig"]["ReadonlyRootfs"] is True, c.name
        assert "no-new-privileges" in " ".join(info["HostConfig"].get("SecurityOpt") or []), c.name
        assert not info["EffectiveCaps"], f"{c.name}: capabilities {info['EffectiveCaps']}"
        mounts[c.name] = {m["Destination"]: m for m in info["Mounts"]}
    assert set(mounts["ext-authz"]) == {"/sockets", "/etc/edge-auth/keys"}
    assert set(mounts["envoy"]) == {"/etc/envoy", "/etc/envoy/tls", "/sockets"}
    shared = {d for d in mounts["ext-authz"] if d in mounts["envoy"]
              and mounts["ext-authz"][d]["Name"] == mounts["envoy"][d]["Name"]}
    assert shared == {"/sockets"}
    assert set(mounts["login-service"]) == {"/etc/edge-auth/keys", DATA_MOUNT}
    assert set(mounts["demo-upstream"]) == set()
    # Writable: only /sockets (ext-authz, envoy) and login-service's SQLite stand-in for MySQL.
    for cname, ms in mounts.items():
        rw = {d for d, m in ms.items() if m.get("RW")}
        assert rw <= {"/sockets", DATA_MOUNT}, f"{cname}: writable {rw}"
    # Seen from inside our containers: the kernel's view, not podman's bookkeeping.
    for cname in ("ext-authz", "login-service", "demo-upstream"):
        status = podman("exec", f"{name}-{cname}", "cat", "/proc/1/status").stdout
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        assert fields["Uid"].split()[0] == "65532", cname
        assert fields["CapEff"].strip() == "0000000000000000", cname
        assert fields["NoNewPrivs"].strip() == "1", cname
        touch = podman("exec", f"{name}-{cname}", "touch", "/tmp/x", check=False)
        assert touch.returncode != 0 and "Read-only file system" in touch.stderr, cname
    sock = podman("exec", f"{name}-ext-authz", "stat", "-c", "%a %u:%g", "/sockets/ext-authz.sock").stdout.split()
    assert sock == ["660", "65532:65532"], sock


def test_readme_walkthrough_against_the_published_port(pod):
    base = pod["base"]
    status, _, body = request(f"{base}/login", "POST", basic(ALICE))
    assert status == 200, body
    token = json.loads(body)["access_token"]
    status, _, body = request(f"{base}/hello", headers={"Authorization": f"Bearer {token}"})
    assert status == 200, body
    echoed = {k.lower(): v for k, v in json.loads(body)["headers"].items()}
    assert echoed["x-auth-email"] == ALICE[0] and echoed["x-auth-user-id"] and "x-auth-roles" in echoed
    status, headers, body = request(f"{base}/hello")
    assert status == 401 and headers.get("www-authenticate", headers.get("WWW-Authenticate", "")).startswith("Bearer")
    status, _, _ = request(f"{base}/admin/x", headers={"Authorization": f"Bearer {token}"})
    assert status == 403
    status, _, body = request(f"{base}/login", "POST", basic(ROOT))
    root = json.loads(body)["access_token"]
    assert request(f"{base}/admin/x", headers={"Authorization": f"Bearer {root}"})[0] == 200


def test_logout_then_the_token_is_refused_at_the_edge(pod):
    """POST /logout through Envoy revokes the token; ext-authz (another container, following
    login-service's feed over the pod's network as over the Service) then refuses it."""
    base = pod["base"]
    token = json.loads(request(f"{base}/login", "POST", basic(ALICE))[2])["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert request(f"{base}/hello", headers=auth)[0] == 200
    status, _, body = request(f"{base}/logout", "POST", auth)
    assert status == 204, body
    wait_for(lambda: request(f"{base}/hello", headers=auth)[0] == 401, "the revoked token refused",
             deadline=30, logs=pod["logs"])


def test_key_rotation_by_replacing_the_mounted_key_files(pod):
    """The walkthrough's rotation, done as a Secret update reaches a pod: the mounted directory's
    files are replaced (kubelet-style `..data` swap) under the running containers."""
    base, volume = pod["base"], pod["keys_volume"]
    token = json.loads(request(f"{base}/login", "POST", basic(ALICE))[2])["access_token"]
    keys = {k: v for k, (v, _) in volume.files.items()}
    assert list(keys) == ["key-1"]
    mode = next(iter(volume.files.values()))[1]
    new_key = os.urandom(32).hex()
    publish(Path(volume.source), {"key-1": (keys["key-1"], mode), "key-2": (new_key, mode)}, pod["fs_group"])
    rotated = resign(token, "key-2", new_key)
    wait_for(lambda: request(f"{base}/hello", headers={"Authorization": f"Bearer {rotated}"})[0] == 200,
             "a key-2 token accepted without a restart", deadline=30, logs=pod["logs"])
    assert request(f"{base}/hello", headers={"Authorization": f"Bearer {token}"})[0] == 200, "key-1 still valid"
    publish(Path(volume.source), {"key-2": (new_key, mode)}, pod["fs_group"])
    wait_for(lambda: request(f"{base}/hello", headers={"Authorization": f"Bearer {token}"})[0] == 401,
             "key-1 tokens refused once key-1 is removed", deadline=30, logs=pod["logs"])
    assert request(f"{base}/hello", headers={"Authorization": f"Bearer {rotated}"})[0] == 200
