"""`/mesh ab`, `/mesh mirror` and `/mesh bluegreen` as a person uses them: the command goes
through the bot's real listener (grammar, policy, approvals), a real RQ worker runs the job
against the real kube-apiserver (meshbot under the chart's RBAC; the emulator only where a write
is slipped in just before meshbot's), and what people see is read back from the Slack stand-in."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.adapters.audit import AuditEntry, AuditLog
from tests.fixtures.meshbot import CHANNEL, OPERATOR, EmulatedMesh, Mesh, MeshBase
from tests.integration.chatops import ChatOps, write_policy
from tests.integration.test_istio_models import assert_valid_istio

GROUP, VERSION, NS = "networking.istio.io", "v1beta1", "production"
SVC = "payment-service"
GATEWAY_VS = "auth-gateway"  # auth-service's second VirtualService, in istio-system


def write_runbook_policy(directory: Path) -> Path:
    """The packaged policy with what these commands read from it: a service safe to mirror, a
    blue/green service, and one whose traffic is split on two VirtualServices."""
    path = write_policy(directory)
    data = yaml.safe_load(path.read_text())
    data["services"]["logging-service"]["mirror_safe"] = True
    data["services"]["order-service"]["subsets"] = {"stable": "blue", "canary": "green"}
    data["services"]["auth-service"]["virtual_services"] = [
        "auth-service", f"istio-system/{GATEWAY_VS}"]
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    return write_runbook_policy(tmp_path)


@pytest.fixture
def ops(mesh: Mesh) -> Iterator[ChatOps]:
    yield ChatOps.start(mesh)


@pytest.fixture
def emulated_ops(emulated_mesh: EmulatedMesh) -> Iterator[ChatOps]:
    yield ChatOps.start(emulated_mesh)


# --- helpers ---------------------------------------------------------------------------------


def vs(mesh: MeshBase, name: str = SVC, namespace: str = NS) -> dict[str, Any]:
    return mesh.cluster.get(GROUP, VERSION, "virtualservices", namespace, name)


def http(mesh: MeshBase, name: str = SVC, namespace: str = NS) -> list[dict[str, Any]]:
    return list(vs(mesh, name, namespace)["spec"]["http"])


def thread(ops: ChatOps, marker: str) -> list[str]:
    """The newest thread whose root contains ``marker``: root first, then the replies."""
    roots = [m for m in ops.mesh.slack.roots(CHANNEL) if marker in m.text]
    assert roots, f"no thread with {marker!r} in {ops.roots()}"
    return ops.thread(roots[-1].ts)


def audit(mesh: Mesh, target: str) -> list[AuditEntry]:
    return AuditLog(mesh.redis).last(target, 20)


def run(ops: ChatOps, text: str, user: str = OPERATOR) -> str:
    """Type the command, let the worker run it; the response_url of the command."""
    ack, url = ops.command(text, user=user)
    assert "Refused" not in ack, ack
    ops.run()
    return url


def not_ready(mesh: Mesh, pod: str) -> None:
    def fail_readiness(obj: dict[str, Any]) -> None:
        for condition in obj["status"]["conditions"]:
            condition["status"] = "False"

    mesh.cluster.change("", "v1", "pods", NS, pod, fail_readiness)


def gateway_virtual_service(mesh: Mesh) -> None:
    """An ingress-gateway VirtualService in istio-system: it must name the service by FQDN."""
    host = f"auth-service.{NS}.svc.cluster.local"
    mesh.cluster.put_object(GROUP, VERSION, "virtualservices", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "VirtualService",
        "metadata": {"name": GATEWAY_VS, "namespace": "istio-system"},
        "spec": {"hosts": ["auth.example.com"], "gateways": ["istio-system/public"],
                 "http": [{"route": [
                     {"destination": {"host": host, "subset": "stable"}, "weight": 100},
                     {"destination": {"host": host, "subset": "canary"}, "weight": 0}]}]},
    })


# --- /mesh ab --------------------------------------------------------------------------------


def test_ab_routes_the_header_to_canary_before_the_weights(ops: ChatOps, mesh: Mesh) -> None:
    before = http(mesh)
    run(ops, f"ab {SVC} header=X-Canary:true")  # upper case typed; Istio needs lower

    routes = http(mesh)
    assert routes == [{
        "name": "meshbot-ab",
        "match": [{"headers": {"x-canary": {"exact": "true"}}}],
        "route": [{"destination": {"host": SVC, "subset": "canary"}}],
    }, *before]  # the weighted route exactly as it was
    assert_valid_istio(vs(mesh))
    texts = thread(ops, "*Header route*")
    assert f"`{SVC}` ({NS}) requested by <@{OPERATOR}>" in texts[0]
    assert "header `x-canary: true` go to canary" in texts[0]
    assert "Header route `x-canary: true` → canary" in texts[1] and f"`{SVC}`" in texts[1]
    entry = audit(mesh, SVC)[0]
    assert (entry.action, entry.outcome, entry.actor) == ("ab", "done", OPERATOR)
    assert "none → x-canary: true to canary" in entry.detail and entry.permalink


def test_ab_off_removes_only_its_route(ops: ChatOps, mesh: Mesh) -> None:
    def add_someone_elses_route(obj: dict[str, Any]) -> None:
        obj["spec"]["http"].insert(0, {"name": "legacy", "match": [{"uri": {"prefix": "/v0"}}],
                                       "route": [{"destination": {"host": "legacy-api"}}]})

    mesh.cluster.change(GROUP, VERSION, "virtualservices", NS, SVC, add_someone_elses_route)
    original = http(mesh)
    run(ops, f"ab {SVC} header=canary:true")
    assert [r.get("name") for r in http(mesh)] == ["legacy", "meshbot-ab", None]

    run(ops, f"ab {SVC} off")

    assert http(mesh) == original
    texts = thread(ops, "*Header route off*")
    assert "Header route `canary: true` removed" in texts[-1]
    assert [e.outcome for e in audit(mesh, SVC)][:2] == ["done", "done"]


def test_ab_changes_every_virtual_service_of_the_service(ops: ChatOps, mesh: Mesh) -> None:
    gateway_virtual_service(mesh)
    run(ops, "ab auth-service header=x-beta:1")

    mesh_route = http(mesh, "auth-service")[0]
    gateway_route = http(mesh, GATEWAY_VS, "istio-system")[0]
    assert mesh_route["route"] == [{"destination": {"host": "auth-service",
                                                    "subset": "canary"}}]
    fqdn = f"auth-service.{NS}.svc.cluster.local"
    assert gateway_route["route"] == [{"destination": {"host": fqdn, "subset": "canary"}}]
    assert gateway_route["match"] == [{"headers": {"x-beta": {"exact": "1"}}}]
    assert_valid_istio(vs(mesh, GATEWAY_VS, "istio-system"))
    assert f"istio-system/{GATEWAY_VS}" in thread(ops, "*Header route*")[1]


def test_ab_keeps_a_concurrent_edit(emulated_ops: ChatOps, emulated_mesh: EmulatedMesh) -> None:
    """Someone edits the VirtualService between meshbot's read and its write: the write is
    refused for its stale resourceVersion, meshbot re-reads, and both changes survive. (On the
    emulator: the edit is slipped in just before meshbot's write lands.)"""
    def someone_adds_a_timeout(obj: dict[str, Any]) -> None:
        obj["spec"]["http"][0]["timeout"] = "5s"

    emulated_mesh.cluster.interfere(someone_adds_a_timeout, plural="virtualservices", name=SVC)
    run(emulated_ops, f"ab {SVC} header=canary:true")
    routes = http(emulated_mesh)
    assert routes[0]["name"] == "meshbot-ab" and routes[1]["timeout"] == "5s"


def test_ab_refusals_change_nothing(ops: ChatOps, mesh: Mesh) -> None:
    original = vs(mesh)
    url = run(ops, f"ab {SVC} off")
    assert any("has no header route of meshbot's" in t for t in ops.told(url))

    not_ready(mesh, f"{SVC}-v2-0")
    url = run(ops, f"ab {SVC} header=canary:true")
    assert any("'canary' subset of payment-service has no ready pods" in t
               for t in ops.told(url))

    ack, _ = ops.command(f"ab {SVC} header=canary")  # no value: the grammar says how
    assert "header=<name>:<value>" in ack
    assert vs(mesh) == original
    assert [e.outcome for e in audit(mesh, SVC)][:2] == ["refused", "refused"]
    assert not [m for m in mesh.slack.roots(CHANNEL) if "Header route" in m.text]


def test_ab_on_a_gitops_owned_object_says_why(ops: ChatOps, mesh: Mesh) -> None:
    mesh.cluster.change(GROUP, VERSION, "virtualservices", NS, SVC,
                        lambda o: o["metadata"].setdefault("labels", {}).update(
                            {"argocd.argoproj.io/instance": "payments"}))
    original = vs(mesh)
    url = run(ops, f"ab {SVC} header=canary:true")
    assert any("Argo CD would revert" in t for t in ops.told(url))
    assert vs(mesh) == original


# --- /mesh mirror ----------------------------------------------------------------------------


def test_mirror_of_a_service_that_writes_needs_confirmation(ops: ChatOps, mesh: Mesh) -> None:
    original = vs(mesh)
    url = run(ops, f"mirror {SVC} 20")
    told = " ".join(ops.told(url))
    assert "mirroring duplicates writes" in told
    assert f"`/mesh mirror {SVC} 20 confirm=yes`" in told
    assert vs(mesh) == original
    assert audit(mesh, SVC)[0].outcome == "refused"

    run(ops, f"mirror {SVC} 20 confirm=yes")

    route = http(mesh)[0]
    assert route["mirror"] == {"host": SVC, "subset": "canary"}
    assert route["mirrorPercentage"] == {"value": 20.0}
    assert route["route"] == original["spec"]["http"][0]["route"]
    assert_valid_istio(vs(mesh))
    texts = thread(ops, "*Mirror*")
    assert "a copy of 20% of live requests to canary" in texts[0]
    assert "Mirroring 20% of live traffic to canary" in texts[1] and "(was nothing)" in texts[1]
    assert "repeat their writes" in texts[1]
    assert "mirror none → 20% to canary" in audit(mesh, SVC)[0].detail


def test_mirror_safe_service_and_mirror_off(ops: ChatOps, mesh: Mesh) -> None:
    original = vs(mesh, "logging-service")
    run(ops, "mirror logging-service 50")  # mirror_safe in the policy: no confirmation
    assert http(mesh, "logging-service")[0]["mirrorPercentage"] == {"value": 50.0}

    run(ops, "mirror logging-service off")

    assert vs(mesh, "logging-service")["spec"] == original["spec"]
    assert "Mirroring off" in thread(ops, "*Mirror off*")[-1]
    assert "(was 50%)" in thread(ops, "*Mirror off*")[-1]
    url = run(ops, "mirror logging-service off")
    assert any("mirrors nothing" in t for t in ops.told(url))


def test_mirror_refuses_zero_and_an_unready_canary(ops: ChatOps, mesh: Mesh) -> None:
    original = vs(mesh, "logging-service")
    url = run(ops, "mirror logging-service 0")
    assert any("mirroring 0% sends nothing" in t for t in ops.told(url))
    not_ready(mesh, "logging-service-v2-0")
    url = run(ops, "mirror logging-service 10")
    assert any("has no ready pods" in t for t in ops.told(url))
    ack, _ = ops.command("mirror logging-service 10 confirm=no")
    assert "the only confirmation is confirm=yes" in ack
    assert vs(mesh, "logging-service") == original


# --- /mesh bluegreen -------------------------------------------------------------------------


def blue_green(mesh: Mesh, service: str = "order-service") -> None:
    """The runbook's blue/green objects: DestinationRule subsets blue (v1) and green (v2)."""
    def rename(obj: dict[str, Any]) -> None:
        for route in obj["spec"]["http"]:
            for destination in route["route"]:
                old = destination["destination"]["subset"]
                destination["destination"]["subset"] = {"stable": "blue", "canary": "green"}[old]

    def subsets(obj: dict[str, Any]) -> None:
        obj["spec"]["subsets"] = [{"name": "blue", "labels": {"version": "v1"}},
                                  {"name": "green", "labels": {"version": "v2"}}]

    mesh.cluster.change(GROUP, VERSION, "virtualservices", NS, service, rename)
    mesh.cluster.change(GROUP, VERSION, "destinationrules", NS, service, subsets)


def test_bluegreen_refusals_change_nothing(ops: ChatOps, mesh: Mesh) -> None:
    original = copy.deepcopy(vs(mesh, "logging-service"))  # pilot: no approvals needed
    not_ready(mesh, "logging-service-v2-0")
    url = run(ops, "bluegreen logging-service")
    assert any("has no ready pods" in t for t in ops.told(url))
    assert vs(mesh, "logging-service") == original

    run(ops, "canary metrics-collector 5")
    original = vs(mesh, "metrics-collector")
    url = run(ops, "bluegreen metrics-collector")
    assert any("has a rollout progressing" in t for t in ops.told(url))
    assert vs(mesh, "metrics-collector") == original
