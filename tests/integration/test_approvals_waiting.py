"""An approval whose work is then blocked is not spent: at quorum a lock held by other work or the
change freeze makes the request wait, its approvals kept, saying what for; the ticker's approval
sweep runs it once the obstacle is gone, until the request's expiry. A rollback is never blocked
and needs no approval meanwhile. Through the bot's listener functions, a real RQ worker, Redis,
the kube-apiserver and the Slack stand-in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.adapters.approval_store import ApprovalStore
from jobs.adapters.audit import AuditLog
from jobs.adapters.locks import Locks
from jobs.adapters.prometheus import MetricsSource
from jobs.adapters.rollout_store import RolloutStore
from jobs.domain import rollout as machine
from jobs.domain.approval_rules import ApprovalState, PendingApproval
from jobs.domain.rollout import Event
from jobs.runtime import context
from jobs.runtime.handlers.approvals import sweep
from jobs.runtime.ticker import Ticker
from meshbot.settings import Settings
from playground.redis_server import free_port
from tests.fixtures.meshbot import CHANNEL, Mesh
from tests.integration.chatops import APPROVERS, ChatOps, write_policy
from tests.integration.test_worker_jobs import release_retries

A1, A2, A3 = APPROVERS
SERVICE = "payment-service"  # critical: above 25 % and promote need 2 approvals
HOLDER = "U0OPERATOR2"


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    return write_policy(tmp_path)


@pytest.fixture
def ops(mesh: Mesh) -> Iterator[ChatOps]:
    yield ChatOps.start(mesh)


def pending(mesh: Mesh, ts: str) -> PendingApproval:
    found = ApprovalStore(mesh.redis).get(CHANNEL, ts)
    assert found is not None
    return found


def approve(ops: ChatOps, ts: str) -> None:
    assert ops.react(A1, ts) == "counted"
    assert ops.react(A2, ts) == "quorum"
    ops.run()


def tick(mesh: Mesh) -> None:
    """One tick of the ticker (its analysis finds nothing due), then the jobs it enqueued."""
    with MetricsSource(f"http://127.0.0.1:{free_port()}", timeout=0.5) as source:
        Ticker(mesh.redis, Settings()).run_once(context.current(), source)
    mesh.run_jobs()


def test_a_lock_at_quorum_keeps_the_approvals_and_runs_when_free(ops: ChatOps,
                                                                   mesh: Mesh) -> None:
    _, url = ops.command(f"canary {SERVICE} 30")
    ops.run()
    ts = ops.approval().ts
    # Another worker takes the service meanwhile (e.g. one killed mid-job left its lock).
    ops.lock(SERVICE, HOLDER, f"/mesh rollout {SERVICE}", time.time() - 30)
    approve(ops, ts)
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}

    waiting = pending(mesh, ts)
    assert waiting.state is ApprovalState.WAITING and waiting.approvals == (A1, A2)
    text = ops.approval().text
    assert f"waiting: {SERVICE} is busy (<@{HOLDER}> `/mesh rollout {SERVICE}` since" in text
    assert "runs when it is free" in text and "The approvals are kept." in text
    assert any("waiting:" in t for t in ops.thread(ts)[1:])
    assert any(f"waiting: {SERVICE} is busy" in t for t in ops.told(url))  # the requester too
    assert any(e.outcome == "waiting" for e in AuditLog(mesh.redis).last(SERVICE, 10))

    tick(mesh)  # still busy: nothing runs, nothing is spent
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert pending(mesh, ts).state is ApprovalState.WAITING

    Locks(mesh.redis).release(SERVICE, "other-worker")
    tick(mesh)
    assert mesh.weights(SERVICE) == {"stable": 70, "canary": 30}
    done = pending(mesh, ts)
    assert done.state is ApprovalState.DONE and done.approvals == (A1, A2)
    assert f"Approved by <@{A1}> and <@{A2}>; done." in ops.approval().text
    entry = next(e for e in AuditLog(mesh.redis).last(SERVICE, 20) if e.outcome == "done")
    assert entry.approvers == (A1, A2) and entry.after == "stable 70 / canary 30"


def test_a_freeze_at_quorum_waits_until_it_is_lifted(ops: ChatOps, mesh: Mesh) -> None:
    ops.command(f"canary {SERVICE} 30")
    ops.run()
    ts = ops.approval().ts
    ops.command("freeze on", user=HOLDER)
    ops.run()
    approve(ops, ts)
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert pending(mesh, ts).state is ApprovalState.WAITING
    text = mesh.slack.message(CHANNEL, ts).text
    assert f"waiting: changes are frozen (<@{HOLDER}> froze them since" in text
    assert "runs when the freeze is lifted" in text

    ops.command("freeze off", user=HOLDER)
    ops.run()
    lift = ops.approval()
    assert lift.ts != ts and "lift the change freeze" in lift.text
    assert ops.react(A3, lift.ts) == "quorum"
    ops.run()
    assert Locks(mesh.redis).freeze() is None
    tick(mesh)
    assert mesh.weights(SERVICE) == {"stable": 70, "canary": 30}
    assert pending(mesh, ts).state is ApprovalState.DONE


def test_waiting_past_the_expiry_says_the_approvals_were_not_used(ops: ChatOps,
                                                                   mesh: Mesh) -> None:
    _, url = ops.command(f"canary {SERVICE} 30")
    ops.run()
    ts = ops.approval().ts
    ops.lock(SERVICE, HOLDER, f"/mesh rollout {SERVICE}", time.time())
    approve(ops, ts)
    assert pending(mesh, ts).state is ApprovalState.WAITING

    later = pending(mesh, ts).expires_at + 1
    assert sweep(context.current(), later) == 1
    Locks(mesh.redis).release(SERVICE, "other-worker")
    assert sweep(context.current(), later) == 0  # expired: nothing runs any more
    mesh.run_jobs()
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    expired = pending(mesh, ts)
    assert expired.state is ApprovalState.EXPIRED
    text = mesh.slack.message(CHANNEL, ts).text
    assert "Expired while waiting" in text and "the approvals were not used" in text
    assert any("Expired while waiting" in t for t in ops.told(url))
    entry = next(e for e in AuditLog(mesh.redis).last(SERVICE, 20) if e.outcome == "expired")
    assert "not used" in entry.detail


def test_a_reject_cancels_a_waiting_request(ops: ChatOps, mesh: Mesh) -> None:
    ops.command(f"canary {SERVICE} 30")
    ops.run()
    ts = ops.approval().ts
    ops.lock(SERVICE, HOLDER, f"/mesh rollout {SERVICE}", time.time())
    approve(ops, ts)
    assert ops.react(A3, ts) == "closed"  # its quorum is there: more changes nothing
    assert ops.react(A3, ts, "x") == "rejected"
    ops.run()
    Locks(mesh.redis).release(SERVICE, "other-worker")
    tick(mesh)
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert pending(mesh, ts).state is ApprovalState.REJECTED


def test_a_rollback_is_never_blocked_and_a_waiting_promote_is_then_voided(
        ops: ChatOps, mesh: Mesh) -> None:
    ops.command(f"canary {SERVICE} 10")
    ops.run()
    RolloutStore(mesh.redis).update(SERVICE, lambda r: machine.apply(
        r, Event.CHECK_PASSED, time.time(), "success 100%") if r else None)
    ops.command(f"promote {SERVICE}")
    ops.run()
    ts = ops.approval().ts
    ops.lock(SERVICE, HOLDER, f"/mesh mirror {SERVICE} 10", time.time())
    approve(ops, ts)
    assert pending(mesh, ts).state is ApprovalState.WAITING

    ops.command(f"rollback {SERVICE}", user=A3)  # no approval, and the lock does not stop it
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    Locks(mesh.redis).release(SERVICE, "other-worker")
    tick(mesh)
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}  # never promoted after it
    voided = pending(mesh, ts)
    assert voided.state is ApprovalState.VOIDED
    assert f"Not run: a rollback of `{SERVICE}` was accepted after it" in voided.detail
    assert f"The approvals of <@{A1}> and <@{A2}> were not used" in voided.detail


def test_a_refusal_at_quorum_says_the_approvals_were_not_used(ops: ChatOps,
                                                               mesh: Mesh) -> None:
    ops.command(f"canary {SERVICE} 10")
    ops.run()
    RolloutStore(mesh.redis).update(SERVICE, lambda r: machine.apply(
        r, Event.CHECK_PASSED, time.time(), "success 100%") if r else None)
    _, url = ops.command(f"promote {SERVICE}")
    ops.run()
    ts = ops.approval().ts
    # A check fails meanwhile: no longer a healthy canary, so the promote is refused at quorum.
    RolloutStore(mesh.redis).update(SERVICE, lambda r: machine.apply(
        r, Event.CHECK_FAILED, time.time(), "success 90%") if r else None)
    approve(ops, ts)
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    assert any("no SLO evidence" in t for t in ops.told(url))
    closed = pending(mesh, ts)
    assert closed.state is ApprovalState.VOIDED
    text = mesh.slack.message(CHANNEL, ts).text
    assert f"The approvals of <@{A1}> and <@{A2}> were not used" in text
    assert any(e.outcome == "not used" for e in AuditLog(mesh.redis).last(SERVICE, 10))


def test_an_expiry_the_sweep_cannot_show_is_shown_and_said_by_a_job(ops: ChatOps,
                                                                     mesh: Mesh) -> None:
    """The ticker's sweep expires a request while Slack answers its edit of the message with a
    500: the expiry stands (audited once), and a job shows it on the message, says it in the
    thread and tells the requester — once — instead of nobody ever hearing of it."""
    _, url = ops.command(f"canary {SERVICE} 30")
    ops.run()
    ts = ops.approval().ts
    assert ops.react(A1, ts) == "counted"
    ops.run()
    mesh.slack.fail("chat.update", "fatal_error", times=1, status=500)

    later = pending(mesh, ts).expires_at + 1
    assert sweep(context.current(), later) == 1
    assert pending(mesh, ts).state is ApprovalState.EXPIRED
    assert "Expired" not in mesh.slack.message(CHANNEL, ts).text  # Slack refused the edit
    mesh.run_jobs()
    while release_retries(mesh.redis):
        mesh.run_jobs()

    assert "Expired" in mesh.slack.message(CHANNEL, ts).text
    said = [t for t in ops.thread(ts)[1:] if "xpired" in t]
    assert len(said) == 1, ops.thread(ts)
    assert len([t for t in ops.told(url) if "xpired" in t]) == 1, ops.told(url)
    expiries = [e for e in AuditLog(mesh.redis).last(SERVICE, 20) if e.outcome == "expired"]
    assert len(expiries) == 1, expiries
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
