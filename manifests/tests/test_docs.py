"""What the Kubernetes docs promise a newcomer, checked against the manifests (issue #18).

Each rule here was a pitfall of a first deploy: a startup probe shorter than the first start it
has to wait for, a doc that names a generated file as the one to edit, a minikube version that
does not guarantee the Kubernetes the manifests need, a port-forward onto `make run`'s port, and
a worked example ("Replace the demo upstream with your service") that must render and route.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import yaml

from conftest import MANIFESTS, REPO, Rendered
from test_manifests import _allowed, all_containers, envoy_config, pod_spec

README = MANIFESTS / "README.md"
DOCS = [REPO / "README.md", README, REPO / "envoy" / "README.md", REPO / "ARCHITECTURE.md",
        *sorted(MANIFESTS.rglob("kustomization.yaml")), *sorted(MANIFESTS.rglob("*.yaml"))]


def section(text: str, heading: str) -> str:
    """The body of a Markdown section, up to the next heading of the same or a higher level
    (`#` lines inside fenced code blocks are comments, not headings)."""
    lines, body, level, fenced = text.splitlines(keepends=True), [], None, False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"^(#+) (.*)$", line)
        if level is None:
            if m and m.group(2) == heading:
                level = len(m.group(1))
            continue
        if m and len(m.group(1)) <= level:
            break
        body.append(line)
    assert level is not None, f"README has no section {heading!r}"
    return "".join(body)


def seconds(text: str) -> int:
    m = re.search(r"(\d+) s\b", text)
    assert m, f"no time in seconds in {text!r}"
    return int(m.group(1))


def probe_window(probe: dict) -> int:
    """How long the kubelet lets a container start before killing it (defaults: period 10 s,
    failureThreshold 3, initialDelaySeconds 0)."""
    return probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)


def first_start_rows() -> list[tuple[str, str, int, int]]:
    """(container, workload, documented first start, documented window) of the README's table."""
    body = section(README.read_text(), "First deploy: what to expect")
    rows = []
    for line in body.splitlines():
        m = re.match(r"^\| `([a-z-]+)` \(([a-z-]+)\) \| (.+?) \| (\d+) s \|$", line)
        if m:
            rows.append((m.group(1), m.group(2), seconds(m.group(3)), int(m.group(4))))
    return rows


def test_startup_probes_cover_the_documented_first_start(overlays):
    """A startup probe shorter than the first start restarts the container with back-off on
    every fresh `kubectl apply -k`; the table must also state the probe the manifests have."""
    r = overlays["minikube"]
    rows = first_start_rows()
    assert {c for c, *_ in rows} >= {"ext-authz", "login-service", "mariadb"}, rows
    for container, workload, documented, window in rows:
        kind = "StatefulSet" if workload == "mysql" else "Deployment"
        c = next(c for c in all_containers(pod_spec(r.get(kind, workload))) if c["name"] == container)
        actual = probe_window(c["startupProbe"])
        assert actual == window, f"README says {container}'s startup window is {window} s, the manifest {actual} s"
        assert documented < actual, f"{container}: documented first start {documented} s >= probe window {actual} s"


def test_walkthrough_waits_longer_than_the_documented_first_start():
    longest = max(documented for _, _, documented, _ in first_start_rows())
    walkthrough = section(README.read_text(), "Walkthrough")
    timeouts = re.findall(r"--timeout=(\d+)m", walkthrough)
    assert timeouts
    for t in timeouts:
        assert int(t) * 60 > longest, f"--timeout={t}m is shorter than the documented first start {longest} s"


def test_migrate_job_retries_for_longer_than_mariadb_first_start(overlays):
    """The Job's pods fail while MariaDB initializes (the README says so): its backoff (10 s,
    doubling, capped at 6 min, backoffLimit retries) and deadline must outlast that start."""
    mariadb = next(d for c, _, d, _ in first_start_rows() if c == "mariadb")
    job = overlays["minikube"].get("Job", "login-service-migrate")["spec"]
    retrying = sum(min(10 * 2 ** i, 360) for i in range(job["backoffLimit"]))
    assert retrying > mariadb and job["activeDeadlineSeconds"] > mariadb
    walkthrough = section(README.read_text(), "Walkthrough")
    assert "Error" in walkthrough and "login-service-migrate" in walkthrough


GENERATED = ("envoy/envoy.yaml", "envoy/envoy-uds.yaml", "base/gateway/envoy.yaml", "overlays/production/envoy.yaml")
EDIT_WORDS = re.compile(r"\b(edit|change|modify|adjust|tweak)", re.I)


def sentences(text: str) -> list[str]:
    """Sentences of prose or comments: split at '. ', blank lines and list items."""
    flat = re.sub(r"\n\s*#\s?", " ", text)  # join comment lines
    return [s for s in re.split(r"(?<=[.;:])\s+(?=[A-Z(`])|\n\s*\n|\n- |\n\|", flat) if s.strip()]


def test_no_doc_names_a_generated_file_as_the_one_to_edit():
    """base/gateway/envoy.yaml and the other Envoy configs are rendered by envoy/render.py from
    envoy/envoy.yaml.in (`make envoy-check` fails on a hand edit): a sentence that tells the
    reader to edit or change one must name the source or the renderer."""
    offenders = []
    for doc in DOCS:
        if doc.name == "envoy.yaml" or "tests" in doc.parts:
            continue  # the generated files' own headers say so; tests are not docs
        for sentence in sentences(doc.read_text()):
            if any(g in sentence for g in GENERATED) and EDIT_WORDS.search(sentence) \
                    and "envoy.yaml.in" not in sentence and "render.py" not in sentence:
                offenders.append(f"{doc.relative_to(REPO)}: {' '.join(sentence.split())[:200]}")
    assert not offenders, "\n".join(offenders)


def k8s_minimum() -> tuple[int, ...]:
    """The oldest Kubernetes scripts/check-k8s.sh validates against: the manifests' requirement."""
    versions = re.search(r"^K8S_VERSIONS=\(([^)]*)\)", (REPO / "scripts" / "check-k8s.sh").read_text(), re.M)
    return min(tuple(int(x) for x in v.split(".")) for v in versions.group(1).split())


def test_documented_minikube_version_meets_the_manifests_requirement():
    """`--kubernetes-version=stable` moves with minikube releases and says nothing about native
    sidecars: every documented `minikube start` pins a version >= the validated minimum."""
    starts = [l for doc in (REPO / "README.md", README) for l in doc.read_text().splitlines()
              if re.match(r"^\s*minikube start\b", l)]
    assert starts
    for line in starts:
        m = re.search(r"--kubernetes-version=v(\d+)\.(\d+)\.(\d+)\b", line)
        assert m, f"minikube start without a pinned --kubernetes-version=vX.Y.Z: {line}"
        assert tuple(map(int, m.groups())) >= k8s_minimum(), line
        assert re.search(r"--cpus=\d+", line) and re.search(r"--memory=\d+g", line), \
            f"the in-minikube release build needs its CPUs and memory said: {line}"


def test_port_forward_avoids_make_run_ports_and_is_waited_for():
    """`make run`'s Envoy holds 127.0.0.1:8080 (and the other local ports): a port-forward onto
    one of them fails, or worse, the walkthrough's curl reaches the local stack."""
    local_ports = {8080, 8443, 9901, 9001, 9002, 5000, 8000}
    walkthrough = section(README.read_text(), "Walkthrough")
    lines = walkthrough.splitlines()
    forwards = [i for i, l in enumerate(lines) if "port-forward svc/gateway" in l]
    assert forwards
    for i in forwards:
        local = int(re.search(r"port-forward svc/gateway (\d+):", lines[i]).group(1))
        assert local not in local_ports, lines[i]
        assert re.match(rf"^until curl .*localhost:{local}/", lines[i + 1]), "wait for the port-forward"
        curls = [l for l in lines[i + 2:] if "curl " in l and "localhost:" in l]
        assert curls and all(f"localhost:{local}/" in l for l in curls), "every request uses the forwarded port"


def rebuild_note_names_every_deployment(overlays):
    return {d["metadata"]["name"] for d in overlays["minikube"].of_kind("Deployment")
            if any(c["image"].startswith("edge-auth") for c in all_containers(pod_spec(d)))}


def test_rebuild_under_the_same_tag_says_rollout_restart(overlays):
    walkthrough = section(README.read_text(), "Walkthrough")
    line = next(l for l in walkthrough.splitlines() if "rollout restart" in l)
    for name in rebuild_note_names_every_deployment(overlays):
        assert f"deploy/{name}" in line, f"rollout restart misses {name}"


# ---- the worked example: replace the demo upstream ------------------------------------------------

def example_files() -> dict[str, str]:
    """The YAML blocks of the section, keyed by the file named in their first line."""
    body = section(README.read_text(), "Replace the demo upstream with your service")
    files = {}
    for block in re.findall(r"```yaml\n(.*?)```", body, re.S):
        first = block.splitlines()[0]
        m = re.match(r"^# manifests/(overlays/[a-z-]+/[a-z.-]+)$", first)
        assert m, f"example block without its path: {first}"
        files[m.group(1)] = block
    return files


def test_replace_the_demo_upstream_example_renders_and_routes(tmp_path):
    """The section's files and commands, run in a copy of the repository: the overlay renders,
    the demo upstream is gone, Envoy's upstream is the example's Service and port, the Service
    reaches the pods' port, and only the gateway may open that port."""
    work = tmp_path / "repo"
    shutil.copytree(MANIFESTS, work / "manifests", ignore=shutil.ignore_patterns("secrets", "tests"))
    shutil.copytree(REPO / "envoy", work / "envoy", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([str(REPO / "scripts" / "gen-secrets.sh"), "--manifests", str(work / "manifests")],
                   check=True, capture_output=True)
    files = example_files()
    assert set(files) >= {"overlays/my-app/kustomization.yaml", "overlays/my-app/shop.yaml"}
    for path, text in files.items():
        (work / "manifests" / path).parent.mkdir(parents=True, exist_ok=True)
        (work / "manifests" / path).write_text(text)
    body = section(README.read_text(), "Replace the demo upstream with your service")
    script = re.search(r"```sh\n(.*?)```", body, re.S).group(1).replace("\\\n", " ")
    render = next(l for l in script.splitlines() if l.startswith("python3 envoy/render.py"))
    proc = subprocess.run(shlex.split(render), cwd=work, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "kubectl apply -k manifests/overlays/my-app" in script
    text = subprocess.run(["kubectl", "kustomize", str(work / "manifests" / "overlays" / "my-app")],
                          check=True, capture_output=True, text=True).stdout
    r = Rendered("my-app", [d for d in yaml.safe_load_all(text) if d], text)

    assert not any(d["metadata"]["name"] == "demo-upstream" for d in r.docs), "the demo upstream is still there"
    cluster = next(c for c in envoy_config(r)["static_resources"]["clusters"] if c["name"] == "demo_upstream")
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    host, _, namespace = address["address"].partition(".")
    assert namespace == "edge-auth.svc.cluster.local"
    service = r.get("Service", host)
    service_port = next(p for p in service["spec"]["ports"] if p["port"] == address["port_value"])
    app = next(d for d in r.of_kind("Deployment")
               if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v
                      for k, v in service["spec"]["selector"].items()))
    app_labels = app["spec"]["template"]["metadata"]["labels"]
    container_ports = {p.get("name"): p["containerPort"] for c in all_containers(pod_spec(app)) for p in c["ports"]}
    target = service_port["targetPort"]
    pod_port = container_ports[target] if isinstance(target, str) else target
    assert app["metadata"]["namespace"] == "edge-auth" and service["metadata"]["namespace"] == "edge-auth"

    gateway = r.get("Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    login = r.get("Deployment", "login-service")["spec"]["template"]["metadata"]["labels"]
    assert _allowed(r, gateway, app_labels, pod_port), "the gateway cannot reach the app's pods"
    assert not _allowed(r, login, app_labels, pod_port), "someone besides the gateway reaches the app"
    assert _allowed(r, gateway, login, 5000), "login still reachable"

