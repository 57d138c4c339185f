"""manifests/components/monitoring (issue #14): it renders on top of an overlay, its scrape
targets are real ports the NetworkPolicy admits, its alerts pass `promtool check rules` and
`promtool test rules`, each has a runbook section, and every metric a rule or a dashboard panel
names exists: in the services' documented metric lists (which the crates' documented_metrics
tests check against the live binaries) and, scraped here from the rendered gateway run on
loopback, in the live /metrics of ext-authz and login-service and Envoy's /stats/prometheus.

Not checked here (no cluster, no Prometheus Operator, no Grafana on this machine): the
PodMonitor/PrometheusRule objects against the operator's CRD schemas (kubernetes-validate knows
only built-in kinds; the standard kinds of the component are validated), that Prometheus really
scrapes through the NetworkPolicy, and that Grafana imports the dashboard.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import MANIFESTS, REPO, THROWAWAY_DATABASE_URL
from test_gateway_runtime import PASSWORD, request, stack  # noqa: F401  (module fixture)
from test_manifests import container_ports, labels_match, long_running_containers, pod_spec

COMPONENT = MANIFESTS / "components" / "monitoring"
RULES = COMPONENT / "prometheusrule.yaml"
RULE_TESTS = COMPONENT / "monitoring-tests.yaml"
DASHBOARD = COMPONENT / "dashboards" / "edge-auth.json"
RUNBOOKS = REPO / "docs" / "runbooks.md"
OPERATOR_KINDS = {"PodMonitor", "PrometheusRule", "ServiceMonitor"}
OUR_PREFIXES = ("envoy_", "ext_authz_", "login_")


# ---- rendering --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> list[dict]:
    """The minikube overlay with the monitoring component, rendered with throwaway secrets."""
    work = tmp_path_factory.mktemp("monitoring")
    shutil.copytree(MANIFESTS, work / "manifests", ignore=shutil.ignore_patterns("secrets", "tests"))
    subprocess.run([str(REPO / "scripts" / "gen-secrets.sh"), "--manifests", str(work / "manifests"), "minikube"],
                   check=True, capture_output=True, env={**os.environ, "DATABASE_URL": THROWAWAY_DATABASE_URL})
    # As manifests/README.md tells an operator: the component added to an overlay's components.
    overlay = work / "manifests" / "overlays" / "minikube"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    kustomization["components"].append("../../components/monitoring")
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    out = subprocess.run(["kubectl", "kustomize", str(overlay)], check=True, capture_output=True, text=True).stdout
    (work / "rendered.yaml").write_text(out)
    return [d for d in yaml.safe_load_all(out) if d]


def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def test_component_renders_its_objects_in_the_namespace(rendered):
    names = {(d["kind"], d["metadata"]["name"]) for d in rendered if d["kind"] in OPERATOR_KINDS
             or d["metadata"]["name"].startswith(("monitoring-", "edge-auth-dashboard"))}
    assert names == {("PodMonitor", "gateway"), ("PodMonitor", "login-service"), ("PrometheusRule", "edge-auth"),
                     ("NetworkPolicy", "monitoring-scrape-gateway"),
                     ("NetworkPolicy", "monitoring-scrape-login-service"), ("ConfigMap", "edge-auth-dashboard")}
    for d in rendered:
        if (d["kind"], d["metadata"]["name"]) in names:
            assert d["metadata"]["namespace"] == "edge-auth", d["metadata"]["name"]
    cm = next(d for d in of_kind(rendered, "ConfigMap") if d["metadata"]["name"] == "edge-auth-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["edge-auth.json"]) == json.loads(DASHBOARD.read_text())


def test_standard_kinds_of_the_component_are_schema_valid(rendered, tmp_path):
    """kubernetes-validate --strict on everything but the operator's kinds (unknown to it)."""
    standard = [d for d in rendered if d["kind"] not in OPERATOR_KINDS]
    path = tmp_path / "standard.yaml"
    path.write_text(yaml.safe_dump_all(standard))
    for version in ("1.33.0", "1.37.0"):
        proc = subprocess.run(["kubernetes-validate", "--strict", "--quiet", "-k", version, str(path)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pod_monitors_scrape_declared_ports_that_the_network_policy_admits(rendered):
    workloads = {d["metadata"]["name"]: d for d in of_kind(rendered, "Deployment")}
    policies = of_kind(rendered, "NetworkPolicy")
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    monitoring_ns = {"kubernetes.io/metadata.name": "monitoring"}
    seen = set()
    for pm in of_kind(rendered, "PodMonitor"):
        assert pm["apiVersion"] == "monitoring.coreos.com/v1"
        selector = pm["spec"]["selector"]
        pods = [w for w in workloads.values() if labels_match(selector, w["spec"]["template"]["metadata"]["labels"])]
        assert len(pods) == 1, f"{pm['metadata']['name']} selects {[p['metadata']['name'] for p in pods]}"
        pod = pods[0]
        labels = pod["spec"]["template"]["metadata"]["labels"]
        ports = {}
        for c in long_running_containers(pod_spec(pod)):
            ports.update(container_ports(c))
        for ep in pm["spec"]["podMetricsEndpoints"]:
            assert ep["port"] in ports, f"{pm['metadata']['name']}: no container port named {ep['port']}"
            number = ports[ep["port"]]
            admitted = [
                p for p in policies if labels_match(p["spec"]["podSelector"], labels)
                for rule in p["spec"].get("ingress", [])
                if number in [x["port"] for x in rule.get("ports", [])]
                and any(labels_match(peer.get("namespaceSelector", {}), monitoring_ns)
                        and "namespaceSelector" in peer and labels_match(peer.get("podSelector", {}), prometheus)
                        for peer in rule.get("from", []))
            ]
            assert admitted, f"no NetworkPolicy admits Prometheus to {pod['metadata']['name']}:{number}"
            seen.add((pod["metadata"]["name"], ep["path"]))
    assert seen == {("gateway", "/metrics"), ("gateway", "/stats/prometheus"), ("login-service", "/metrics")}
    # The scrape rules open nothing to anyone else: every peer is the monitoring namespace's Prometheus.
    for p in policies:
        if p["metadata"]["name"].startswith("monitoring-"):
            for rule in p["spec"]["ingress"]:
                for peer in rule["from"]:
                    assert peer == {"namespaceSelector": {"matchLabels": monitoring_ns},
                                    "podSelector": {"matchLabels": prometheus}}


# ---- rules ---------------------------------------------------------------------------------------

def alerts() -> list[dict]:
    spec = yaml.safe_load(RULES.read_text())["spec"]
    return [r for g in spec["groups"] for r in g["rules"] if "alert" in r]


@pytest.fixture(scope="module")
def promtool_dir(tmp_path_factory) -> Path:
    """rules.yaml (the PrometheusRule's spec, exactly what the operator hands Prometheus) beside
    the unit tests."""
    if not shutil.which("promtool"):
        pytest.fail("promtool missing: scripts/bootstrap.sh --test installs Debian's prometheus package")
    d = tmp_path_factory.mktemp("promtool")
    (d / "rules.yaml").write_text(yaml.safe_dump(yaml.safe_load(RULES.read_text())["spec"]))
    shutil.copy(RULE_TESTS, d / "monitoring-tests.yaml")
    return d


def test_promtool_check_rules(promtool_dir):
    proc = subprocess.run(["promtool", "check", "rules", "rules.yaml"], cwd=promtool_dir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in proc.stdout + proc.stderr


def test_promtool_unit_tests_fire_each_alert_and_stay_silent_when_healthy(promtool_dir):
    proc = subprocess.run(["promtool", "test", "rules", "monitoring-tests.yaml"], cwd=promtool_dir,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Coverage: each alert is expected to fire somewhere, and is checked silent on the healthy
    # series (the first test group).
    groups = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing = {t["alertname"] for g in groups for t in g["alert_rule_test"] if t["exp_alerts"]}
    healthy = {t["alertname"] for t in groups[0]["alert_rule_test"] if t["exp_alerts"] == []}
    names = {a["alert"] for a in alerts()}
    assert names - firing == set(), "alerts no unit test fires"
    assert names - healthy == set(), "alerts not checked silent on healthy series"


def test_every_alert_links_a_runbook_section():
    headings = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                for line in RUNBOOKS.read_text().splitlines() if line.startswith("## ")}
    for alert in alerts():
        url = alert["annotations"]["runbook_url"]
        page, anchor = url.split("#")
        assert page == "docs/runbooks.md" and anchor == alert["alert"].lower(), url
        assert anchor in headings, f"docs/runbooks.md has no section `## {alert['alert']}`"
        assert alert["labels"]["severity"] in ("warning", "critical")


# ---- metric names ---------------------------------------------------------------------------------

def expressions() -> list[str]:
    exprs = [a["expr"] for a in alerts()]
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        exprs += [t["expr"] for t in panel["targets"]]
    return exprs


def metric_names(expr: str) -> set[str]:
    """The metric names of a PromQL expression: identifiers with one of our prefixes, once label
    matchers (`{...}`), grouping clauses (`by (...)`) and strings are removed."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    return {m for m in re.findall(r"\b[a-z_][a-z0-9_]*\b", expr) if m.startswith(OUR_PREFIXES)}


def used_names() -> set[str]:
    return set().union(*(metric_names(e) for e in expressions()))


def test_metric_name_extraction():
    assert metric_names('sum by (envoy_response_code_class) (rate(envoy_http_downstream_rq_xx'
                        '{envoy_http_conn_manager_prefix="login_x"}[5m])) / login_in_flight') == {
        "envoy_http_downstream_rq_xx", "login_in_flight"}


def documented_names() -> set[str]:
    ext = (REPO / "ext-authz" / "README.md").read_text().split("\n## Metrics")[1].split("\n## ")[0]
    names = {row.split("`")[1] for row in ext.splitlines() if row.startswith("| `ext_authz_")}
    login_row = next(l for l in (REPO / "login-service" / "README.md").read_text().splitlines()
                     if l.startswith("| `GET /metrics`"))
    names |= {tok.split("{")[0] for tok in login_row.split("`")[1::2] if tok.startswith("login_")}
    return names


def family_candidates(name: str) -> set[str]:
    """The metric families a sample name may belong to (counter `_total`, histogram series)."""
    out = {name}
    for suffix in ("_total", "_bucket", "_count", "_sum"):
        if name.endswith(suffix):
            out.add(name[: -len(suffix)])
    return out


def test_rules_and_dashboard_use_only_documented_service_metrics():
    documented = {f for n in documented_names() for f in family_candidates(n)}
    assert len(documented) > 15
    ours = [n for n in used_names() if not n.startswith("envoy_")]
    missing = sorted(n for n in ours if not family_candidates(n) & documented)
    assert not missing, f"not in ext-authz/README.md or login-service/README.md Metrics: {missing}"


def test_dashboard_has_the_on_call_panels():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "edge-auth"
    titles = " | ".join(p["title"].lower() for p in dash["panels"])
    for needed in ("allow / deny by reason", "check latency", "envoy ext_authz", "logins by outcome",
                   "login latency", "lockouts", "feed lag", "keys loaded"):
        assert needed in titles, needed
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def families(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_every_metric_in_rules_and_dashboard_is_exported_live(stack):  # noqa: F811
    """Scrapes the running gateway (Envoy through the ready listener's /stats/prometheus, as the
    PodMonitor does), ext-authz and login-service after one login, one allowed and one denied
    request and one refresh grant: no rule or panel names a metric that does not exist."""
    base = stack["base"]
    basic = base64.b64encode(f"alice@example.com:{PASSWORD}".encode()).decode()
    status, _, body = request(f"{base}/login", method="POST", headers={"Authorization": f"Basic {basic}"})
    assert status == 200, body
    token = json.loads(body)["access_token"]
    assert request(f"{base}/hello", headers={"Authorization": f"Bearer {token}"})[0] == 200
    assert request(f"{base}/hello")[0] == 401
    # And one refresh grant through the gateway (`login_token_requests_total` has a series once a
    # grant is answered): an unknown refresh token is login-service's invalid_grant, not a 401.
    status, _, body = request(f"{base}/token", method="POST", data=b"grant_type=refresh_token&refresh_token=x",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, json.loads(body)["error"]) == (400, "invalid_grant"), body
    live = set()
    for url in (f"{stack['ready']}/stats/prometheus", stack["ext_authz_metrics"], f"{stack['login']}/metrics"):
        status, _, body = request(url)
        assert status == 200, url
        live |= families(body.decode())
    # Per external issuer only: ext-authz registers these once an issuer is configured, and the
    # rendered gateway configures none; ext-authz's documented_metrics test scrapes them with one.
    per_issuer = {n for n in documented_names() if n.startswith("ext_authz_jwks_")}
    assert not live & per_issuer, "issuer metrics now exported without issuers: drop the exception"
    missing = sorted(n for n in used_names() if not family_candidates(n) & live and n not in per_issuer)
    assert not missing, f"named in a rule or panel, absent from the live metrics: {missing}"
    assert any(n.startswith("envoy_") for n in used_names())
