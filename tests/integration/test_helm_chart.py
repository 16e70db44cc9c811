"""The Helm chart, linted and rendered by Helm's own engine (helm-python-sdk's libhelm).

Nothing here talks to a cluster: ``helm_python.lint`` and ``Chart.render`` run Helm's Go code
offline. The rendered objects are then checked against the contracts: RBAC exactly as
jobs/rbac.py's table, hardening, probes, the mounted policy, and the PromQL of the
PrometheusRule (run through ``promtool test rules`` when promtool is installed).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from jobs.domain.rbac import NAMED_BY_MANAGED_NAMESPACES, rules_by_scope
from meshbot.cli import build_parser
from meshbot.settings import Settings
from tests.fixtures.helm_chart import CHART, RELEASE_NAMESPACE, ROOT, Rendered, render

PACKAGED_POLICY = CHART / "files" / "default-policy.yaml"

Obj = dict[str, Any]

CUSTOM_POLICY = """\
version: 1
roles:
  operators: [U0OPS]
defaults:
  namespace: payments
permissions:
  status: [everyone]
services:
  checkout: {tier: core}
"""

SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    # Everything optional switched on, names and namespaces not the defaults.
    "http-everything": {
        "serve": {"replicas": 3, "ingress": {"enabled": True, "className": "nginx"}},
        "worker": {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 8}},
        "rbac": {"namespaces": ["production", "staging", "payments"]},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "redis": {"existingSecret": "meshbot-redis"},
        "slack": {"apiUrl": "https://slack.internal.example/api"},
        "networkPolicy": {
            "serveFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}
            ]
        },
        "policy": CUSTOM_POLICY,
        "kubeconfig": {"existingSecret": "meshbot-kubeconfig"},
    },
    "socket": {
        "mode": "socket",
        "worker": {"autoscaling": {"enabled": True}},
        "rbac": {"namespaces": ["production", "staging"], "istioNamespace": "istio-control"},
        "serviceMonitor": {"enabled": True},
    },
}


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return render(SCENARIOS[request.param])


@pytest.fixture(scope="module")
def default() -> Rendered:
    return render({})


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def pod_specs(r: Rendered) -> dict[str, Obj]:
    """The pod spec of each Deployment, by component label."""
    return {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"]["template"]["spec"]
        for d in r.of_kind("Deployment")
    }


# ---- lint and schema ------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint_strict_is_clean(scenario: str) -> None:
    report = helm.lint(CHART, SCENARIOS[scenario], strict=True, namespace=RELEASE_NAMESPACE)
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # Severity 1 is informational ("icon is recommended"); warnings (2) and errors (3) fail.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(
    "bad",
    [
        {"serve": {"replicas": 1}},
        {"rbac": {"namespaces": ["*"]}},
        {"rbac": {"namespaces": []}},
        {"mode": "websocket"},
        {"slack": {"existingSecret": ""}},
        {"unknownKey": True},
    ],
)
def test_schema_refuses_bad_values(bad: dict[str, Any]) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.render(bad, name="meshbot", namespace=RELEASE_NAMESPACE)


# ---- RBAC -----------------------------------------------------------------------------------


def test_no_wildcards_and_no_secrets_anywhere_in_rbac(rendered: Rendered) -> None:
    roles = rendered.of_kind("Role") + rendered.of_kind("ClusterRole")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert not any("*" in item for item in rule.get(key, [])), (role, rule)
            assert "secrets" not in rule["resources"]
            assert "nonResourceURLs" not in rule


def test_roles_are_exactly_the_table(rendered: Rendered) -> None:
    table = {scope: [r.as_k8s() for r in rules] for scope, rules in rules_by_scope().items()}
    rbac = rendered.values["rbac"]
    managed = rbac["namespaces"]

    roles = {
        (r["metadata"]["namespace"], r["metadata"]["name"]): r for r in rendered.of_kind("Role")
    }
    assert set(roles) == {(ns, "meshbot") for ns in managed} | {
        (rbac["istioNamespace"], "meshbot-readiness")
    }
    for ns in managed:
        assert roles[(ns, "meshbot")]["rules"] == table["namespaced"], ns
    assert roles[(rbac["istioNamespace"], "meshbot-readiness")]["rules"] == table["istio-system"]

    (cluster_role,) = rendered.of_kind("ClusterRole")
    cluster_rules = []
    for rule in cluster_role["rules"]:
        rule = dict(rule)
        names = rule.pop("resourceNames", None)
        # Namespaces are patchable only by name, and only the managed ones.
        if set(rule["resources"]) & NAMED_BY_MANAGED_NAMESPACES:
            assert names == managed
        else:
            assert names is None
        cluster_rules.append(rule)
    assert cluster_rules == table["cluster"]


def test_bindings_give_the_roles_to_meshbots_service_account(rendered: Rendered) -> None:
    (account,) = rendered.of_kind("ServiceAccount")
    subject = {
        "kind": "ServiceAccount",
        "name": account["metadata"]["name"],
        "namespace": RELEASE_NAMESPACE,
    }
    roles = {
        (r["metadata"].get("namespace"), r["metadata"]["name"]) for r in rendered.of_kind("Role")
    }
    bindings = rendered.of_kind("RoleBinding")
    assert {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in bindings} == roles
    (cluster_binding,) = rendered.of_kind("ClusterRoleBinding")
    (cluster_role,) = rendered.of_kind("ClusterRole")
    assert cluster_binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    for binding in [*bindings, cluster_binding]:
        assert binding["subjects"] == [subject]
    for spec in pod_specs(rendered).values():
        assert spec["serviceAccountName"] == account["metadata"]["name"]


# ---- workloads ------------------------------------------------------------------------------


def test_components_follow_the_mode(rendered: Rendered) -> None:
    values = rendered.values
    deployments = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in rendered.of_kind("Deployment")
    }
    args = {
        c: d["spec"]["template"]["spec"]["containers"][0]["args"] for c, d in deployments.items()
    }
    if values["mode"] == "http":
        assert set(deployments) == {"serve", "worker"}
        assert deployments["serve"]["spec"]["replicas"] >= 2
        assert args["serve"] == ["serve", "--host", "0.0.0.0", "--port", "3000"]
    else:
        assert set(deployments) == {"socket", "worker"}
        assert args["socket"][0] == "socket"
        assert not [s for s in rendered.of_kind("Service") if s["spec"].get("clusterIP") != "None"]
        assert rendered.of_kind("Ingress") == []
    assert args["worker"] == ["worker", "--metrics-port", "9100"]
    worker = deployments["worker"]["spec"]
    if values["worker"]["autoscaling"]["enabled"]:
        # The HPA owns the count; a replicas field would fight it on every upgrade.
        assert "replicas" not in worker
        (hpa,) = rendered.of_kind("HorizontalPodAutoscaler")
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployments["worker"]["metadata"]["name"]
    else:
        assert worker["replicas"] == values["worker"]["replicas"]
        assert rendered.of_kind("HorizontalPodAutoscaler") == []


def test_container_args_are_accepted_by_the_cli(rendered: Rendered) -> None:
    # The image's ENTRYPOINT is `meshbot`, so args are exactly what its parser receives.
    parser = build_parser()
    for component, spec in pod_specs(rendered).items():
        (container,) = spec["containers"]
        args = parser.parse_args(container["args"])
        assert args.command == component
        if component in {"worker", "socket"}:
            port = next(p for p in container["ports"] if p["name"] == "metrics")
            assert args.metrics_port == port["containerPort"]
        else:
            assert args.port == container["ports"][0]["containerPort"]


def test_every_container_is_hardened(rendered: Rendered) -> None:
    for component, spec in pod_specs(rendered).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, component
        assert spec["securityContext"]["runAsUser"] == 10001
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert "privileged" not in sc


def test_probes_hit_healthz_and_readyz_on_a_declared_port(rendered: Rendered) -> None:
    for component, spec in pod_specs(rendered).items():
        (container,) = spec["containers"]
        ports = {p["name"] for p in container["ports"]}
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", component
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", component
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] in ports


def test_environment_uses_the_settings_names(rendered: Rendered) -> None:
    known: set[str] = set()
    for info in Settings.model_fields.values():
        alias = info.validation_alias
        known.update([alias] if isinstance(alias, str) else map(str, getattr(alias, "choices", [])))
    known.add("KUBECONFIG")  # the Kubernetes client's own, standard variable
    secret = rendered.values["slack"]["existingSecret"]
    for component, spec in pod_specs(rendered).items():
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        assert set(env) <= known, component
        required = {"SLACK_BOT_TOKEN", "REDIS_URL", "PROMETHEUS_URL", "MESHBOT_POLICY"}
        assert required <= set(env), component
        assert env["MESHBOT_NAMESPACE"]["value"] == RELEASE_NAMESPACE
        assert env["SLACK_BOT_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == secret
        if component == "serve":
            assert {"SLACK_SIGNING_SECRET", "ALERTMANAGER_TOKEN"} <= set(env)
        if component == "socket":
            assert "SLACK_APP_TOKEN" in env
        # Tokens are referenced from the Secret, never written into the manifest.
        for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
            assert "value" not in env.get(name, {})
        if rendered.values["redis"]["existingSecret"]:
            assert "secretKeyRef" in env["REDIS_URL"]["valueFrom"]
        else:
            assert env["REDIS_URL"]["value"] == rendered.values["redis"]["url"]
        assert ("SLACK_API_URL" in env) == bool(rendered.values["slack"]["apiUrl"])


def test_policy_configmap_is_mounted_where_meshbot_policy_points(rendered: Rendered) -> None:
    (configmap,) = rendered.of_kind("ConfigMap")
    text = rendered.values["policy"] or PACKAGED_POLICY.read_text()
    assert configmap["data"]["policy.yaml"] == text
    assert yaml.safe_load(configmap["data"]["policy.yaml"]) == yaml.safe_load(text)
    for component, spec in pod_specs(rendered).items():
        (container,) = spec["containers"]
        path = Path(next(e["value"] for e in container["env"] if e["name"] == "MESHBOT_POLICY"))
        volumes = {v["name"]: v for v in spec["volumes"]}
        mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == path.parent)
        assert mount["readOnly"] is True, component
        assert volumes[mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
        assert path.name in configmap["data"]


def test_the_charts_default_policy_is_the_packaged_one() -> None:
    # The chart cannot read files outside itself, so it carries a copy; this catches drift.
    # Fix: cp policies/default.yaml helm/meshbot/files/default-policy.yaml
    assert PACKAGED_POLICY.read_bytes() == (ROOT / "policies" / "default.yaml").read_bytes()


# ---- availability and network ---------------------------------------------------------------


def test_every_deployment_has_a_pdb(rendered: Rendered) -> None:
    budgets = rendered.of_kind("PodDisruptionBudget")
    for deployment in rendered.of_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(matching) == 1, deployment["metadata"]["name"]


def test_network_policies_cover_every_pod(rendered: Rendered) -> None:
    policies = rendered.of_kind("NetworkPolicy")
    for deployment in rendered.of_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]

        def selects(policy: Obj, labels: dict[str, str] = labels) -> bool:
            selector = policy["spec"]["podSelector"]
            if not selector.get("matchLabels", {}).items() <= labels.items():
                return False
            return all(
                labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", [])
            )

        types = {t for p in policies if selects(p) for t in p["spec"]["policyTypes"]}
        assert types == {"Ingress", "Egress"}, deployment["metadata"]["name"]


def test_ingress_publishes_only_the_slack_endpoint() -> None:
    r = render(SCENARIOS["http-everything"])
    (ingress,) = r.of_kind("Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert [p["path"] for p in rule["http"]["paths"]] == ["/slack/events"]
    service = rule["http"]["paths"][0]["backend"]["service"]
    assert r.one("Service", service["name"])["spec"]["ports"][0]["name"] == service["port"]["name"]


def test_service_monitor_scrapes_named_service_ports() -> None:
    r = render(SCENARIOS["http-everything"])
    (monitor,) = r.of_kind("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    ports = {
        p["name"]
        for s in r.of_kind("Service")
        if selector.items() <= s["metadata"]["labels"].items()
        for p in s["spec"]["ports"]
    }
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    assert render({}).of_kind("ServiceMonitor") == []


def test_release_name_is_used_for_every_name() -> None:
    r = render({}, release="chatops")
    names = {obj["metadata"]["name"] for obj in r.objects}
    assert all(name.startswith("chatops-meshbot") for name in names), names


# ---- NOTES ----------------------------------------------------------------------------------


def test_notes_explain_alertmanager_and_redis_persistence(default: Rendered) -> None:
    assert "/alertmanager" in default.notes
    assert "type: Bearer" in default.notes
    assert "AOF" in default.notes
    socket = render(SCENARIOS["socket"])
    assert "AOF" in socket.notes
    assert "only" in socket.notes and "http mode" in socket.notes


# ---- PrometheusRule -------------------------------------------------------------------------


def rule_groups(r: Rendered) -> list[Obj]:
    (rule,) = r.of_kind("PrometheusRule")
    groups: list[Obj] = rule["spec"]["groups"]
    return groups


def test_prometheus_rule_counts_only_the_destination_reporter(default: Rendered) -> None:
    rules = [rule for group in rule_groups(default) for rule in group["rules"]]
    istio = [r["expr"] for r in rules if "istio_" in r["expr"]]
    assert istio
    for expr in istio:
        selectors = expr.count("istio_")
        assert expr.count('reporter="destination"') == selectors, expr
    alerts = {r["alert"]: r["expr"] for r in rules if "alert" in r}
    assert "14.4" in alerts["ErrorBudgetBurnRateHigh"]
    assert {"SLOAvailabilityBreach", "SLOLatencyBreach", "MeshbotAnalysisStalled"} <= set(alerts)
    assert "meshbot_last_tick_timestamp" in alerts["MeshbotAnalysisStalled"]
    assert {r["record"] for r in rules if "record" in r} >= {
        "sli:availability:rate5m",
        "sli:latency:p99:5m",
        "sli:throughput:rate5m",
    }


PROMTOOL = shutil.which("promtool")


def series(metric: str, values: str, **labels: str) -> dict[str, str]:
    """One promtool input series; every istio one is of production's service ``svc``."""
    if metric.startswith("istio_"):
        svc = labels.pop("svc")
        labels = {
            "destination_service_name": svc,
            "destination_workload_namespace": "production",
            **labels,
        }
    body = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{metric}{{{body}}}", "values": values}


def service(svc: str) -> dict[str, str]:
    return {"destination_service_name": svc, "destination_workload_namespace": "production"}


def labels_of(svc: str) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in service(svc).items()) + "}"


REQS = "istio_requests_total"
BUCKET = "istio_request_duration_milliseconds_bucket"
TICK = "meshbot_last_tick_timestamp"
DEST, SRC = "destination", "source"

# Series every minute for 90 minutes. payment-service fails 10 % of requests at the
# destination; the source-side copies of the same requests carry no errors (and are all fast),
# so counting them would halve the error ratio and hide the latency. user-service never
# answers 5xx (no 5xx series at all); idle-service has a counter but no traffic.
PROMTOOL_TESTS: dict[str, Any] = {
    "rule_files": ["rules.yaml"],
    "evaluation_interval": "1m",
    "tests": [
        {
            "interval": "1m",
            "input_series": [
                series(REQS, "0+54x90", reporter=DEST, svc="payment-service", response_code="200"),
                series(REQS, "0+6x90", reporter=DEST, svc="payment-service", response_code="503"),
                series(REQS, "0+60x90", reporter=SRC, svc="payment-service", response_code="200"),
                series(REQS, "0+60x90", reporter=DEST, svc="user-service", response_code="200"),
                series(REQS, "100+0x90", reporter=DEST, svc="idle-service", response_code="200"),
                series(BUCKET, "0+54x90", reporter=DEST, svc="payment-service", le="50"),
                series(BUCKET, "0+60x90", reporter=DEST, svc="payment-service", le="250"),
                series(BUCKET, "0+60x90", reporter=DEST, svc="payment-service", le="+Inf"),
                series(BUCKET, "0+60x90", reporter=SRC, svc="payment-service", le="50"),
                series(BUCKET, "0+60x90", reporter=SRC, svc="payment-service", le="+Inf"),
                series(TICK, "0+60x90", namespace=RELEASE_NAMESPACE),
            ],
            "promql_expr_test": [
                {
                    # No value at all for idle-service: no traffic is not 100 % (nor NaN).
                    "expr": "round(sli:availability:rate5m * 1000)",
                    "eval_time": "80m",
                    "exp_samples": [
                        {"labels": labels_of("payment-service"), "value": 900},
                        {"labels": labels_of("user-service"), "value": 1000},
                    ],
                },
                {
                    "expr": "round(sli:error_ratio:rate1h * 1000)",
                    "eval_time": "80m",
                    "exp_samples": [
                        {"labels": labels_of("payment-service"), "value": 100},
                        {"labels": labels_of("user-service"), "value": 0},
                    ],
                },
                {
                    # 99th percentile between the 50 and 250 ms buckets: 50 + 200 * 0.9.
                    "expr": "round(sli:latency:p99:5m)",
                    "eval_time": "80m",
                    "exp_samples": [{"labels": labels_of("payment-service"), "value": 230}],
                },
            ],
            "alert_rule_test": [
                {
                    "alertname": name,
                    "eval_time": "80m",
                    "exp_alerts": [{"exp_labels": {**labels, **service("payment-service")}}],
                }
                for name, labels in [
                    ("ErrorBudgetBurnRateHigh", {"severity": "critical", "slo": "availability"}),
                    ("SLOAvailabilityBreach", {"severity": "critical", "slo": "availability"}),
                    ("SLOLatencyBreach", {"severity": "warning", "slo": "latency"}),
                ]
            ]
            + [{"alertname": "MeshbotAnalysisStalled", "eval_time": "80m", "exp_alerts": []}],
        },
        {
            # The tick gauge stops moving at 10m: stale after tickStaleSeconds plus `for`.
            "interval": "1m",
            "input_series": [series(TICK, "0+60x10 600+0x30", namespace=RELEASE_NAMESPACE)],
            "alert_rule_test": [
                {"alertname": "MeshbotAnalysisStalled", "eval_time": "12m", "exp_alerts": []},
                {
                    "alertname": "MeshbotAnalysisStalled",
                    "eval_time": "20m",
                    "exp_alerts": [
                        {"exp_labels": {"severity": "critical", "namespace": RELEASE_NAMESPACE}}
                    ],
                },
            ],
        },
        {
            # No worker of this release has ever ticked (or none is scraped): absent.
            "interval": "1m",
            "input_series": [series(TICK, "0+60x30", namespace="elsewhere")],
            "alert_rule_test": [
                {
                    "alertname": "MeshbotAnalysisStalled",
                    "eval_time": "10m",
                    "exp_alerts": [
                        {"exp_labels": {"severity": "critical", "namespace": RELEASE_NAMESPACE}}
                    ],
                }
            ],
        },
    ],
}


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) not installed")
def test_prometheus_rules_compute_what_they_claim(default: Rendered, tmp_path: Path) -> None:
    assert PROMTOOL is not None
    groups = rule_groups(default)
    (tmp_path / "full.yaml").write_text(yaml.safe_dump({"groups": groups}))
    check = subprocess.run(
        [PROMTOOL, "check", "rules", "full.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    # The unit test compares expressions and labels; annotation text is checked above by
    # `check rules` (templates parse) and would only make expectations brittle here.
    stripped = [
        {
            **group,
            "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in group["rules"]],
        }
        for group in groups
    ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": stripped}))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(PROMTOOL_TESTS))
    result = subprocess.run(
        [PROMTOOL, "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_kubeconfig_secret_reaches_every_pod_for_several_clusters(default: Rendered) -> None:
    chosen = render({"kubeconfig": {"existingSecret": "meshbot-kubeconfig", "key": "clusters"}})
    for component, spec in pod_specs(chosen).items():
        container = spec["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["KUBECONFIG"] == "/etc/meshbot/kube/clusters", component
        mount = next(m for m in container["volumeMounts"] if m["name"] == "kubeconfig")
        assert mount == {"name": "kubeconfig", "mountPath": "/etc/meshbot/kube", "readOnly": True}
        volume = next(v for v in spec["volumes"] if v["name"] == "kubeconfig")
        assert volume["secret"] == {"secretName": "meshbot-kubeconfig",
                                    "items": [{"key": "clusters", "path": "clusters"}]}
    for component, spec in pod_specs(default).items():  # without it: the service account
        container = spec["containers"][0]
        assert "KUBECONFIG" not in {e["name"] for e in container["env"]}, component
        assert all(v["name"] != "kubeconfig" for v in spec["volumes"]), component
