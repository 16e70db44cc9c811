"""`/mesh canary <service> <percent>` on a running canary moves it: the same rollout and thread at
the new weight, its checks going on there; above the tier's canary_above with the approvals as
usual, and at 100 a promote. Through the bot's listener functions, a real RQ worker, Redis, the
kube-apiserver and the Slack stand-in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.adapters.audit import AuditLog
from jobs.adapters.rollout_store import RolloutStore
from jobs.domain import rollout as machine
from jobs.domain.rollout import Event, Phase, Rollout
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh
from tests.integration.chatops import APPROVERS, ChatOps, write_policy

A1, A2, _ = APPROVERS
SERVICE = "payment-service"  # critical: above 25 % needs 2 approvals


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    return write_policy(tmp_path)


@pytest.fixture
def ops(mesh: Mesh) -> Iterator[ChatOps]:
    yield ChatOps.start(mesh)


def rollout(mesh: Mesh, service: str = SERVICE) -> Rollout:
    found = RolloutStore(mesh.redis).get(service)
    assert found is not None
    return found


def checks_pass(mesh: Mesh, service: str = SERVICE) -> None:
    """What the analysis tick does when a check passes."""
    RolloutStore(mesh.redis).update(service, lambda r: machine.apply(
        r, Event.CHECK_PASSED, time.time(), "success 100%") if r else None)


def canary_thread(ops: ChatOps) -> list[str]:
    roots = [m for m in ops.mesh.slack.roots(CHANNEL) if "*Canary*" in m.text]
    assert len(roots) == 1  # one thread: the move is told in the canary's own
    return ops.thread(roots[0].ts)


def test_a_running_canary_moves_to_the_new_weight(ops: ChatOps, mesh: Mesh) -> None:
    ops.command(f"canary {SERVICE} 10")
    ops.run()
    first = rollout(mesh)
    checks_pass(mesh)
    ack, url = ops.command(f"canary {SERVICE} 20")  # below canary_above: no approval
    assert "Accepted" in ack and "pending approval" not in ack
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 80, "canary": 20}
    assert not [t for t in ops.told(url) if "Refused" in t]

    moved = rollout(mesh)
    assert moved.id == first.id and moved.phase is Phase.PROGRESSING
    assert (moved.weight, moved.steps, moved.fixed) == (20, (20,), True)
    # Its checks go on at the new weight: a new baseline, due at once, no evidence carried.
    assert moved.baseline is None and moved.needs_baseline and moved.passed_checks == 0
    assert RolloutStore(mesh.redis).due(time.time()) == [SERVICE]
    assert moved.history[-1].event is Event.MOVE
    assert not machine.promotable(moved)

    said = canary_thread(ops)[-1]
    assert "moved from 10 % to 20 %" in said
    assert f"by <@{OPERATOR}>" in said and "now stable 80 / canary 20" in said
    entry = AuditLog(mesh.redis).last(SERVICE, 1)[0]
    assert (entry.action, entry.outcome) == ("canary", "done")
    assert (entry.before, entry.after) == ("stable 90 / canary 10", "stable 80 / canary 20")
    assert entry.detail == "moved from 10 % to 20 %"

    checks_pass(mesh)  # a check passes at the new weight: the canary goes on there
    assert rollout(mesh).phase is Phase.PROGRESSING and rollout(mesh).weight == 20


def test_crossing_canary_above_needs_the_approvals(ops: ChatOps, mesh: Mesh) -> None:
    ops.command(f"canary {SERVICE} 10")
    ops.run()
    ack, _ = ops.command(f"canary {SERVICE} 30")
    assert "pending approval" in ack
    ops.run()
    request = ops.approval()
    assert "stable 90→70 / canary 10→30" in request.text
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}  # not before the approvals
    ops.react(A1, request.ts)
    ops.react(A2, request.ts)
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 70, "canary": 30}
    said = canary_thread(ops)
    assert any("moved from 10 % to 30 %" in t and f"approved by <@{A1}> and <@{A2}>" in t
               for t in said)
    assert f"Approved by <@{A1}> and <@{A2}>; done." in ops.approval().text
    done = AuditLog(mesh.redis).last(SERVICE, 1)[0]
    assert done.approvers == (A1, A2) and done.detail == "moved from 10 % to 30 %"
    assert rollout(mesh).weight == 30


def test_a_canary_at_100_is_a_promote(ops: ChatOps, mesh: Mesh) -> None:
    ops.command(f"canary {SERVICE} 10")
    ops.run()
    _, url = ops.command(f"canary {SERVICE} 100")
    ops.run()
    assert any("no SLO evidence to promote on yet" in t for t in ops.told(url))
    assert not [r for r in ops.roots() if "Approval needed" in r]

    checks_pass(mesh)
    ops.command(f"canary {SERVICE} 100")
    ops.run()
    request = ops.approval()
    assert "stable 90→0 / canary 10→100" in request.text and "Needs 2 approvals" in request.text
    ops.react(A1, request.ts)
    ops.react(A2, request.ts)
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 0, "canary": 100}
    assert rollout(mesh).phase is Phase.PROMOTED
    assert any("Promoted: all traffic on canary" in t for t in canary_thread(ops))


def test_moving_to_the_same_weight_or_zero_is_refused(ops: ChatOps, mesh: Mesh) -> None:
    ops.command(f"canary {SERVICE} 10")
    ops.run()
    _, url = ops.command(f"canary {SERVICE} 10")
    ops.run()
    assert any("at 10 % already" in t for t in ops.told(url))
    _, url = ops.command(f"canary {SERVICE} 0")
    ops.run()
    assert any(f"`/mesh rollback {SERVICE}`" in t for t in ops.told(url))
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}


def test_a_rollback_after_a_move_wins(ops: ChatOps, mesh: Mesh) -> None:
    ops.command(f"canary {SERVICE} 10")
    ops.run()
    ops.command(f"canary {SERVICE} 20")
    ops.run()
    ops.command(f"rollback {SERVICE}", user=A1)  # an approver may pull it, without approval
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert rollout(mesh).phase is Phase.ROLLED_BACK
