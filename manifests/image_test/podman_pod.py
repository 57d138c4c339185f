"""The rendered gateway, login-service and demo upstream as ONE podman pod: podman commands
generated from a rendered overlay, never retyped (`make image-test`, issue #19).

Why a translation and not `podman kube play`: Debian bookworm's podman 4.3.1 panics on the
rendered gateway (nil pointer in kube.VolumeFromSecret, tried with the rendered Deployment,
ConfigMaps and Secrets), and it predates native sidecars (an init container with
`restartPolicy: Always`, Kubernetes 1.28+), which it could only run as a run-to-completion init
container before Envoy. Everything else is taken from the rendered objects as they are:

- image, command, args, workingDir, env (ConfigMaps and Secrets resolved), resources.limits;
- securityContext: runAsUser/runAsGroup (pod or container), fsGroup as a supplementary group,
  readOnlyRootFilesystem (and NO extra tmpfs: podman's default /tmp, /run tmpfs on a read-only
  root are switched off), capabilities.drop ALL, allowPrivilegeEscalation false
  (no-new-privileges); seccomp RuntimeDefault is podman's default profile;
- volumes, each mounted only into the containers that mount it in the manifests: emptyDir →
  a podman volume (tmpfs for `medium: Memory`, size from sizeLimit), configMap → a directory of
  its keys, secret → a directory laid out as the kubelet lays it out (`..data` symlink swap, so
  replacing the key files is what a Secret update does), projected → both;
- a native sidecar starts first and must pass its startup probe (TCP) before the main
  containers start, as the kubelet orders them.

What differs from the cluster, and only that (`DEVIATIONS`): the pod's Service names resolve to
127.0.0.1 through `--add-host` (all workloads share the pod's network namespace, ports do not
collide); login-service and its migration use SQLite in a host directory at /data instead of
MySQL;
published ports are 127.0.0.1 ports podman picks (no fixed port).
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

DEVIATIONS = (
    "Service DNS names -> 127.0.0.1 (--add-host): one pod's network namespace",
    "login-service and its migrate Job: DATABASE_URL=sqlite:///data/login.sqlite, a host directory at /data (not MySQL)",
    "ports published on 127.0.0.1, host side chosen by podman",
)
SQLITE_URL = "sqlite:///data/login.sqlite"
DATA_MOUNT = "/data"
UNITS = {"Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3, "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3}


def quantity_bytes(q: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG]i?)?", str(q))
    assert m, f"unsupported quantity {q}"
    return int(m.group(1)) * UNITS.get(m.group(2) or "", 1)


def pages(size: int) -> int:
    """tmpfs size in 4 KiB pages (`nr_blocks`): podman 4 takes `size=` in a volume's options for
    a project-quota request, which tmpfs cannot honour; `nr_blocks` is the same limit."""
    return -(-size // 4096)


def cpus(q: str) -> str:
    q = str(q)
    return str(int(q[:-1]) / 1000) if q.endswith("m") else q


@dataclass
class Volume:
    """One pod volume: a podman volume (emptyDir) or a host directory (configMap/secret/projected)."""

    name: str
    kind: str                      # "tmpfs-volume" | "dir"
    source: str                    # podman volume name or host directory
    create: list[str] = field(default_factory=list)   # podman volume create argv, if any
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # dir: path -> (content, mode)
    secret: bool = False           # laid out kubelet-style (..data)
    owner: int | None = None       # dir: an empty directory owned by this UID/GID, mode 0700
    # Mount points of volumes nested beneath this one (Envoy's tls/ under /etc/envoy): the
    # kubelet creates them in an API data volume (kubernetes#60342), or the runtime's mkdir
    # fails on the read-only mount.
    mountpoints: set[str] = field(default_factory=set)


@dataclass
class Container:
    name: str
    workload: str
    argv: list[str]                # podman run argv (without `podman`)
    sidecar: bool = False
    startup_tcp_port: int | None = None
    one_shot: bool = False


@dataclass
class PodPlan:
    pod: str
    create: list[str]
    volumes: list[Volume]
    containers: list[Container]
    published: list[int]


def _config_data(objs: list[dict], kind: str, name: str) -> dict[str, str]:
    import base64
    obj = next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)
    if kind == "Secret":
        data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        data.update(obj.get("stringData") or {})
        return data
    return dict(obj.get("data") or {})


def _env(objs: list[dict], c: dict) -> dict[str, str]:
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        if "configMapRef" in src:
            env.update(_config_data(objs, "ConfigMap", src["configMapRef"]["name"]))
        if "secretRef" in src:
            env.update(_config_data(objs, "Secret", src["secretRef"]["name"]))
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]
            kind, key = ("Secret", "secretKeyRef") if "secretKeyRef" in ref else ("ConfigMap", "configMapKeyRef")
            env[item["name"]] = _config_data(objs, kind, ref[key]["name"])[ref[key]["key"]]
    return env


def _workload(objs: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def _service_hosts(objs: list[dict], namespace: str) -> list[str]:
    """Every name a Service of the overlay answers to inside the namespace."""
    hosts = []
    for svc in (o for o in objs if o["kind"] == "Service"):
        n = svc["metadata"]["name"]
        hosts += [n, f"{n}.{namespace}", f"{n}.{namespace}.svc", f"{n}.{namespace}.svc.cluster.local"]
    return hosts


def plan(objs: list[dict], pod: str, image_map: dict[str, str], host_dir: Path,
         workloads: tuple[tuple[str, str], ...] = (("Job", "login-service-migrate"),
                                                   ("Deployment", "login-service"),
                                                   ("Deployment", "demo-upstream"),
                                                   ("Deployment", "gateway"))) -> PodPlan:
    """The podman commands for `workloads` of one rendered overlay (`objs`) as one pod.

    `image_map` maps the rendered image names to local ones (kustomize's `edge-auth:dev` is
    already local; a digest-pinned production image would not be). `host_dir` receives the
    ConfigMap and Secret directories."""
    namespace = next(o for o in objs if o["kind"] == "Namespace")["metadata"]["name"]
    volumes: dict[str, Volume] = {}
    containers: list[Container] = []
    published: list[int] = []
    # SQLite's directory, outliving the migrate Job's container as a PVC would (a podman tmpfs
    # volume is unmounted, and emptied, when its last container stops).
    data_volume = Volume("data", "dir", str(host_dir / "data"), owner=65532)
    volumes["data"] = data_volume

    for kind, name in workloads:
        w = _workload(objs, kind, name)
        spec = w["spec"]["template"]["spec"]
        psc = spec.get("securityContext", {})
        for v in spec.get("volumes", []):
            key = f"{name}/{v['name']}"
            if key in volumes:
                continue
            volumes[key] = _volume(objs, pod, name, v, psc.get("fsGroup"), host_dir)
        sidecars = [c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]
        assert len(sidecars) == len(spec.get("initContainers", [])), f"{name}: only native sidecars are translated"
        for c in sidecars + spec["containers"]:
            csc = c.get("securityContext", {})
            uid = csc.get("runAsUser", psc.get("runAsUser"))
            gid = csc.get("runAsGroup", psc.get("runAsGroup"))
            assert uid not in (None, 0), f"{name}/{c['name']}: no non-root runAsUser"
            argv = ["run", "-d", "--pod", pod, "--name", f"{pod}-{c['name']}", "--pull=never",
                    "--user", f"{uid}:{gid}"]
            if psc.get("fsGroup") is not None:
                argv += ["--group-add", str(psc["fsGroup"])]
            if csc.get("readOnlyRootFilesystem"):
                argv += ["--read-only", "--read-only-tmpfs=false"]
            if csc.get("capabilities", {}).get("drop") == ["ALL"]:
                argv += ["--cap-drop", "all"]
            assert not csc.get("capabilities", {}).get("add"), "capabilities.add is not translated"
            if csc.get("allowPrivilegeEscalation") is False:
                argv += ["--security-opt", "no-new-privileges"]
            limits = c.get("resources", {}).get("limits", {})
            if "memory" in limits:
                argv += ["--memory", str(quantity_bytes(limits["memory"]))]
            if "cpu" in limits:
                argv += ["--cpus", cpus(limits["cpu"])]
            if "workingDir" in c:
                argv += ["--workdir", c["workingDir"]]
            env = _env(objs, c)
            if "DATABASE_URL" in env:
                env["DATABASE_URL"] = SQLITE_URL
                argv += ["--mount", f"type=bind,source={data_volume.source},destination={DATA_MOUNT}"]
            for k, val in sorted(env.items()):
                argv += ["--env", f"{k}={val}"]
            for m in c.get("volumeMounts", []):
                assert "subPath" not in m, "subPath is not translated"
                for parent in c.get("volumeMounts", []):
                    rel = os.path.relpath(m["mountPath"], parent["mountPath"])
                    if parent is not m and not rel.startswith(".."):
                        outer = volumes[f"{name}/{parent['name']}"]
                        assert outer.kind == "dir" and outer.owner is None, f"{m['mountPath']} nested in an emptyDir"
                        outer.mountpoints.add(rel)
                vol = volumes[f"{name}/{m['name']}"]
                ro = ",ro=true" if m.get("readOnly") else ""
                if vol.kind == "tmpfs-volume":
                    argv += ["--mount", f"type=volume,source={vol.source},destination={m['mountPath']}{ro}"]
                else:
                    argv += ["--mount", f"type=bind,source={vol.source},destination={m['mountPath']}{ro}"]
            for p in c.get("ports", []):
                if kind == "Deployment" and name == "gateway" and c["name"] == "envoy":
                    published.append(p["containerPort"])
            command = c.get("command")
            if command:
                argv += ["--entrypoint", json.dumps(command)]
            image = image_map.get(c["image"], c["image"])
            argv += [image, *c.get("args", [])]
            probe = c.get("startupProbe", {})
            containers.append(Container(
                c["name"], name, argv, sidecar=c in sidecars,
                startup_tcp_port=probe.get("tcpSocket", {}).get("port") if c in sidecars else None,
                one_shot=(kind == "Job")))

    create = ["pod", "create", "--name", pod]
    for host in _service_hosts(objs, namespace):
        create += ["--add-host", f"{host}:127.0.0.1"]
    for port in published:
        create += ["--publish", f"127.0.0.1::{port}"]
    return PodPlan(pod, create, list(volumes.values()), containers, published)


def _volume(objs, pod, workload, v, fs_group, host_dir: Path) -> Volume:
    name = v["name"]
    if "emptyDir" in v:
        size = quantity_bytes(v["emptyDir"].get("sizeLimit", "64Mi"))
        # The kubelet makes an emptyDir 0777 and, with fsGroup, group-owned and setgid.
        opts = f"nr_blocks={pages(size)},uid=0,gid={fs_group or 0},mode={'2777' if fs_group else '0777'}"
        src = f"{pod}-{workload}-{name}"
        return Volume(name, "tmpfs-volume", src, ["volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
                                                  "--opt", f"o={opts}", src])
    directory = host_dir / workload / name
    files: dict[str, tuple[str, int]] = {}
    if "configMap" in v:
        data = _config_data(objs, "ConfigMap", v["configMap"]["name"])
        mode = v["configMap"].get("defaultMode", 0o644)
        files = {k: (val, mode) for k, val in data.items()}
        return Volume(name, "dir", str(directory), files=files)
    if "secret" in v:
        data = _config_data(objs, "Secret", v["secret"]["secretName"])
        mode = v["secret"].get("defaultMode", 0o644)
        files = {k: (val, mode) for k, val in data.items()}
        return Volume(name, "dir", str(directory), files=files, secret=True)
    if "projected" in v:
        mode = v["projected"].get("defaultMode", 0o644)
        for src in v["projected"]["sources"]:
            kind, ref = ("Secret", src["secret"]) if "secret" in src else ("ConfigMap", src["configMap"])
            data = _config_data(objs, kind, ref["name"])
            for item in ref.get("items", [{"key": k, "path": k} for k in data]):
                files[item["path"]] = (data[item["key"]], mode)
        return Volume(name, "dir", str(directory), files=files, secret=True)
    raise AssertionError(f"{workload}: volume {name} of an untranslated kind")


def publish(directory: Path, files: dict[str, tuple[str, int]], gid: int, mountpoints: set[str] = frozenset()) -> None:
    """Writes (or atomically replaces) a volume's files as the kubelet's atomic writer does:
    a timestamped `..<ts>` directory, `..data` pointing at it, one `<key> -> ..data/<key>`
    symlink per key; files root:`gid` with the volume's mode. A reader sees the old set or the
    new set, never a mix; an existing bind mount of `directory` sees the change."""
    import shutil
    import time
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    stamp = directory / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir()
    os.chmod(stamp, 0o755)
    for key, (content, mode) in files.items():
        path = stamp / key
        path.write_text(content)
        os.chown(path, 0, gid)
        os.chmod(path, mode)
    old = os.readlink(directory / "..data") if (directory / "..data").is_symlink() else None
    tmp = directory / "..data_tmp"
    tmp.symlink_to(stamp.name)
    os.rename(tmp, directory / "..data")
    for key in files:
        if not (directory / key).is_symlink():
            (directory / key).symlink_to(f"..data/{key}")
    for mountpoint in mountpoints:
        (directory / mountpoint).mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if not entry.name.startswith("..") and entry.name not in files and entry.name not in mountpoints:
            entry.unlink()
    if old:
        shutil.rmtree(directory / old)


def main() -> int:
    """Prints the generated commands for the minikube overlay (what `make image-test` runs)."""
    import sys
    import tempfile
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import yaml
    from conftest import render_all
    with tempfile.TemporaryDirectory() as tmp:
        render_all(Path(tmp))
        objs = [d for d in yaml.safe_load_all((Path(tmp) / "minikube.yaml").read_text()) if d]
    p = plan(objs, "edge-auth", {}, Path("/var/tmp/edge-auth-pod"))
    import shlex
    # Values that come from Secrets (throwaway ones here) are not printed.
    secret_env = {item["name"] for o in objs if o["kind"] in ("Deployment", "Job")
                  for c in o["spec"]["template"]["spec"].get("initContainers", []) + o["spec"]["template"]["spec"]["containers"]
                  for item in c.get("env", []) if "secretKeyRef" in item.get("valueFrom", {})}
    for line in DEVIATIONS:
        print(f"# deviation: {line}")
    for v in p.volumes:
        if v.create:
            print("podman " + shlex.join(v.create))
        else:
            print(f"# {v.source}: {', '.join(sorted(v.files))} (written kubelet-style)")
    print("podman " + shlex.join(p.create))
    for c in p.containers:
        argv = [f"{a.split('=', 1)[0]}=<from a Secret>"
                if a.split("=", 1)[0] in secret_env and a != f"DATABASE_URL={SQLITE_URL}" else a for a in c.argv]
        print("podman " + shlex.join(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
