"""`… dry-run` of the runbook's verbs (inject, inject-namespace, mtls, emergency, restore) on the
real kube-apiserver: the plan, nothing changed and no approval asked; then the approved command,
after which the API server holds the plan's ``after``. And the approval request itself: it shows
the plan the approved job writes, and is voided when what would be written changed meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.adapters.audit import AuditLog
from meshbot.plan import Action
from rendering.plan import plan_block
from tests.fixtures.meshbot import Mesh
from tests.integration.chatops import APPROVERS, ChatOps
from tests.integration.test_backup_restore import approve as approve_twice
from tests.integration.test_backup_restore import backup
from tests.integration.test_dry_run import NS, assert_holds, dry_run, live, plan_now, run
from tests.integration.test_emergency import seed_shop, start_emergency
from tests.integration.test_runbook_routing import write_runbook_policy
from tests.integration.test_runbook_sidecars import approved, unlabel

A1 = APPROVERS[0]
NET = ("networking.istio.io", "v1beta1")


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    return write_runbook_policy(tmp_path)


@pytest.fixture
def ops(mesh: Mesh) -> Iterator[ChatOps]:
    yield ChatOps.start(mesh)


def test_inject_plans_the_template_annotation_and_the_pods_rolling(
        ops: ChatOps, mesh: Mesh) -> None:
    plan, reply = dry_run(ops, "inject logging-service")
    assert {c.kind for c in plan.effective} == {"Deployment"}
    assert "spec.template.metadata.annotations.sidecar.istio.io/inject: (none) → true" in reply
    assert "each new one with a sidecar" in reply
    run(ops, "inject logging-service")
    assert_holds(mesh, plan)


def test_inject_namespace_plans_the_label_asks_no_approval_for_it(
        ops: ChatOps, mesh: Mesh) -> None:
    unlabel(mesh, NS)
    plan, reply = dry_run(ops, f"inject-namespace {NS}")
    assert f"update Namespace {NS}" in reply
    assert "metadata.labels.istio-injection: (none) → enabled" in reply
    approved(ops, f"inject-namespace {NS}")
    assert_holds(mesh, plan)


def test_mtls_strict_plans_destination_rules_then_peer_authentication(
        ops: ChatOps, mesh: Mesh) -> None:
    plan, reply = dry_run(ops, f"mtls {NS} strict")
    kinds = [c.kind for c in plan.effective]
    assert kinds[-1] == "PeerAuthentication" and "DestinationRule" in kinds
    assert "spec.trafficPolicy.tls.mode: (none) → ISTIO_MUTUAL" in reply
    approved(ops, f"mtls {NS} strict")
    assert_holds(mesh, plan)


def test_emergency_plans_every_object_of_steps_two_to_four(ops: ChatOps, mesh: Mesh) -> None:
    seed_shop(mesh.cluster)
    plan, reply = dry_run(ops, "emergency shop", "shop")
    actions = {(c.action, c.kind) for c in plan.effective}
    assert actions == {(Action.UPDATE, "PeerAuthentication"), (Action.UPDATE, "Namespace"),
                       (Action.DELETE, "VirtualService"), (Action.DELETE, "DestinationRule")}
    assert "spec.mtls.mode: STRICT → PERMISSIVE" in reply
    assert "metadata.labels.istio-injection: enabled → disabled" in reply
    assert "first, a backup of shop" in reply and "cart-v1, checkout-v1" in reply
    start_emergency(ops, "shop")
    assert_holds(mesh, plan)


def test_restore_shows_its_diff_as_a_plan_then_writes_it(ops: ChatOps, mesh: Mesh) -> None:
    backup_id = backup(ops)
    mesh.cluster.change(*NET, "virtualservices", NS, "auth-service",
                        lambda vs: vs["spec"]["http"][0]["route"][0].update(weight=70))
    plan, reply = dry_run(ops, f"restore {backup_id}")
    assert "update VirtualService production/auth-service" in reply
    assert "spec.http[0].route[0].weight: 70 → 100" in reply
    ops.command(f"restore {backup_id}")
    ops.run()
    approve_twice(ops)
    assert_holds(mesh, plan)


# --- the approval request shows the plan ------------------------------------------------------


def test_the_approval_request_shows_the_plan_the_job_then_writes(
        ops: ChatOps, mesh: Mesh) -> None:
    plan = plan_now(f"mtls {NS} strict")
    run(ops, f"mtls {NS} strict")
    request = ops.approval()
    assert "What will be written once approved:" in request.text
    assert plan_block(plan) in request.text
    ops.react(A1, request.ts)
    ops.run()
    assert_holds(mesh, plan)


def test_a_plan_changed_before_quorum_voids_the_request(ops: ChatOps, mesh: Mesh) -> None:
    run(ops, f"mtls {NS} strict")
    request = ops.approval()
    rule = next(c.name for c in plan_now(f"mtls {NS} strict").effective
                if c.kind == "DestinationRule")
    # Someone sets the rule's TLS by hand: the job would no longer write what was approved.
    mesh.cluster.change(*NET, "destinationrules", NS, rule, lambda dr: dr["spec"].setdefault(
        "trafficPolicy", {}).update(tls={"mode": "SIMPLE"}))
    ops.react(A1, request.ts)
    ops.run()
    voided = ops.approval().text
    assert "Voided" in voided and "plan was" in voided, voided
    assert live(mesh, "PeerAuthentication", NS, "default") is None or \
        live(mesh, "PeerAuthentication", NS, "default")["spec"]["mtls"]["mode"] != "STRICT"  # type: ignore[index]
    assert "voided" in [e.outcome for e in AuditLog(mesh.redis).last(NS, 20)]


def test_a_change_the_plan_does_not_write_keeps_the_request(ops: ChatOps, mesh: Mesh) -> None:
    plan = plan_now(f"mtls {NS} strict")
    run(ops, f"mtls {NS} strict")
    request = ops.approval()
    rule = next(c.name for c in plan.effective if c.kind == "DestinationRule")
    mesh.cluster.change(*NET, "destinationrules", NS, rule, lambda dr: dr["metadata"].setdefault(
        "labels", {}).update(team="mesh"))  # a field the plan does not write
    ops.react(A1, request.ts)
    ops.run()
    assert "Voided" not in ops.approval().text
    assert_holds(mesh, plan)
