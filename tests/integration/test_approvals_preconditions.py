"""Approvers are never asked for work that would then be refused: every precondition that can be
checked before the request (busy, frozen, no SLO evidence yet, a rollout in the way, the
cluster's state) refuses at once, privately, saying why, and nothing is posted in the channel.
Through the bot's listener functions, a real RQ worker, Redis, the kube-apiserver and the Slack
stand-in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.adapters.approval_store import ApprovalStore
from jobs.adapters.audit import AuditLog
from jobs.adapters.rollout_store import RolloutStore
from jobs.domain import rollout as machine
from jobs.domain.rollout import Event
from tests.fixtures.meshbot import Mesh
from tests.integration.chatops import APPROVERS, ChatOps, write_policy

A1, A2, _ = APPROVERS
SERVICE = "payment-service"  # critical: promote needs 2 approvals, a canary above 25 % too
OTHER = "U0OPERATOR2"
HOLDER = "U0OPERATOR3"  # a worker killed mid-job left its lock
NET = ("networking.istio.io", "v1beta1")


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    return write_policy(tmp_path)


@pytest.fixture
def ops(mesh: Mesh) -> Iterator[ChatOps]:
    yield ChatOps.start(mesh)


def refused_at_once(ops: ChatOps, mesh: Mesh, text: str, user: str = OTHER) -> str:
    """Run ``/mesh <text>``: the caller alone is told it is refused, no approver is asked, and
    nothing is posted in the channel. What the caller was told."""
    roots = ops.roots()
    ack, url = ops.command(text, user=user)
    assert "pending approval" in ack  # the policy's count; the worker finds the obstacle
    ops.run()
    told = [t for t in ops.told(url, user=user) if "Refused" in t]
    assert len(told) == 1, ops.told(url, user=user)
    assert ops.roots() == roots  # no approval request, nothing else either
    assert ApprovalStore(mesh.redis).open_count() == 0
    assert not [e for e in AuditLog(mesh.redis).last(None, 50)
                if e.outcome == "approval requested"]
    return told[0]


def checks_pass(mesh: Mesh, service: str = SERVICE) -> None:
    """What the analysis tick does when a check passes."""
    RolloutStore(mesh.redis).update(service, lambda r: machine.apply(
        r, Event.CHECK_PASSED, time.time(), "success 100%") if r else None)


def test_a_promote_without_slo_evidence_is_refused_before_approvers_are_asked(
        ops: ChatOps, mesh: Mesh) -> None:
    ops.command(f"canary {SERVICE} 10")
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    told = refused_at_once(ops, mesh, f"promote {SERVICE}")
    assert f"{SERVICE} has no SLO evidence to promote on yet" in told
    assert "a canary once a check passed" in told
    assert "next check <!date^" in told
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}

    checks_pass(mesh)  # now there is evidence: the request is posted
    ops.command(f"promote {SERVICE}")
    ops.run()
    request = ops.approval()
    assert "stable 90→0 / canary 10→100" in request.text
    ops.react(A1, request.ts)
    ops.react(A2, request.ts)
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 0, "canary": 100}


def test_a_promote_of_a_rollout_mid_way_is_refused_at_once(ops: ChatOps, mesh: Mesh) -> None:
    ops.command(f"rollout {SERVICE} steps=5,10")
    ops.run()
    checks_pass(mesh)  # step 1 of 2 passed: on to 10 %, not ready to promote
    told = refused_at_once(ops, mesh, f"promote {SERVICE}")
    assert "no SLO evidence to promote on yet" in told
    assert "a rollout is promoted once its last step passed" in told


def test_a_promote_with_no_rollout_is_refused_at_once(ops: ChatOps, mesh: Mesh) -> None:
    told = refused_at_once(ops, mesh, f"promote {SERVICE}")
    assert f"{SERVICE} has no rollout to promote" in told
    assert f"`/mesh rollout {SERVICE}`" in told


def test_a_canary_change_during_a_rollout_is_refused_at_once(ops: ChatOps,
                                                              mesh: Mesh) -> None:
    ops.command(f"rollout {SERVICE} steps=5,10,25,50")
    ops.run()
    told = refused_at_once(ops, mesh, f"canary {SERVICE} 30")
    assert f"{SERVICE} already has a rollout progressing" in told
    assert mesh.weights(SERVICE) == {"stable": 95, "canary": 5}


def test_busy_and_frozen_are_refused_before_approvers_are_asked(ops: ChatOps,
                                                                 mesh: Mesh) -> None:
    ops.lock(SERVICE, HOLDER, f"/mesh rollout {SERVICE}", time.time() - 5)
    told = refused_at_once(ops, mesh, f"canary {SERVICE} 30")
    assert f"busy: <@{HOLDER}> `/mesh rollout {SERVICE}` since <!date^" in told
    ops.command("freeze on")
    ops.run()
    told = refused_at_once(ops, mesh, "canary auth-service 30")
    assert "changes are frozen" in told


def test_a_missing_virtualservice_is_refused_before_approvers_are_asked(
        ops: ChatOps, mesh: Mesh) -> None:
    mesh.cluster.delete(*NET, "virtualservices", "production", SERVICE)
    told = refused_at_once(ops, mesh, f"canary {SERVICE} 30")
    assert "VirtualService" in told and SERVICE in told


def test_a_promote_the_write_would_refuse_is_refused_at_once(ops: ChatOps, mesh: Mesh) -> None:
    ops.command(f"canary {SERVICE} 10")
    ops.run()
    checks_pass(mesh)

    def fail_readiness(obj: dict[str, Any]) -> None:
        for condition in obj["status"]["conditions"]:
            condition["status"] = "False"

    mesh.cluster.change("", "v1", "pods", "production", f"{SERVICE}-v2-0", fail_readiness)
    told = refused_at_once(ops, mesh, f"promote {SERVICE}")
    assert "'canary' subset of payment-service has no ready pods" in told
