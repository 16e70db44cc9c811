"""A weight write the Kubernetes API refuses for good (403: meshbot's role lost the right;
422: the object will not take it) is said once in the rollout's thread, audited once, and not
tried again on every tick; the rollout's phase then says what the mesh and the audit say: the
weights were not written, the rollout is paused at the weights the VirtualService still has.

Two writers meet it: the analysis (a rollback it decided: no SLO evidence past the deadline,
with ``no_data: rollback``; its refused next step: ``test_unwritable_step``) and the reconcile
(the same rollback, its first write answered 500, written again by the reconcile on a later
tick and refused then). Prometheus is not there (a refused port): every check is "no data".
Ticks are run as the ticker runs them, their clock given, far apart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.adapters.audit import AuditEntry, AuditLog
from jobs.adapters.prometheus import MetricsSource
from jobs.domain.rollout import Phase, Rollout
from jobs.runtime import context
from jobs.runtime.analysis import tick
from jobs.runtime.reconcile import GRACE_S, READ_BACK_RETRY_S, reconcile
from meshbot.commands import Request, Verb
from playground.kube_emulator_core import Fault
from playground.redis_server import free_port
from tests.fixtures.meshbot import CONTRACT_POLICY, EmulatedMesh
from tests.integration.test_worker_jobs import SERVICE, submit, thread_texts

REFUSED = {403: "not allowed to patch VirtualService", 422: "422"}
TICKS = 6  # ticks after the refusal: none of them may try again


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    """The contract policy, except that no SLO evidence for a second rolls back."""
    text = CONTRACT_POLICY.read_text().replace(
        "no_data: hold}", "no_data: rollback, deadline: 1s}")
    assert "no_data: rollback" in text
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def no_prometheus() -> Iterator[MetricsSource]:
    with MetricsSource(f"http://127.0.0.1:{free_port()}", timeout=0.5,
                       scrape_interval=1.0) as source:
        yield source


def a_running_canary(mesh: EmulatedMesh) -> Request:
    request = submit(mesh, Verb.CANARY, 10)
    mesh.run_jobs()
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    return request


def rollout() -> Rollout:
    found = context.current().store.get(SERVICE)
    assert found is not None
    return found


def refuse_writes(mesh: EmulatedMesh, status: int) -> None:
    mesh.cluster.fail(status, method="PATCH", plural="virtualservices", name=SERVICE, times=1000)


def vs_writes(mesh: EmulatedMesh) -> int:
    return len(mesh.cluster.received(method="PATCH", plural="virtualservices", name=SERVICE))


def meshbot_entries(mesh: EmulatedMesh, canary: Request) -> list[AuditEntry]:
    return [e for e in AuditLog(mesh.redis).last(SERVICE, 50) if e.request_id != canary.id]


def tick_until_rolled_back(mesh: EmulatedMesh, source: MetricsSource) -> float:
    """Two due checks without data: held, then (past the 1 s deadline) rolled back; the
    second check's time."""
    ctx = context.current()
    tick(ctx, source, now=rollout().next_check_at)  # holding, since now
    assert rollout().phase is Phase.HOLDING
    now = rollout().next_check_at
    tick(ctx, source, now=now)  # the rollback is decided and its write sent
    return now


def ticks_go_on(mesh: EmulatedMesh, source: MetricsSource, since: float) -> None:
    """The ticker's analysis and reconcile, tick after tick, long after."""
    ctx = context.current()
    for n in range(1, TICKS + 1):
        later = since + n * (GRACE_S + 60)
        tick(ctx, source, now=later)
        reconcile(ctx, now=later)


def assert_said_audited_paused(mesh: EmulatedMesh, canary: Request, status: int,
                               action: str, canary_weight: int = 10) -> None:
    """Once in the thread, once in the audit, and the phase, the audit and the mesh agree."""
    # A status update within a second of the last one is held (Slack's chat.update budget)
    # until the next: sent now.
    context.current().notifier.flush()
    texts = thread_texts(mesh)
    said = [t for t in texts if "could not write" in t]
    assert len(said) == 1, texts
    live = f"stable {100 - canary_weight} / canary {canary_weight}"
    assert REFUSED[status] in said[0] and f"still {live}" in said[0], said[0]
    assert "paused" in said[0] and f"/mesh rollback {SERVICE}" in said[0], said[0]
    if action == "advance":
        assert f"/mesh resume {SERVICE}" in said[0], said[0]
    assert not any("Rolled back" in t or "Automatic rollback" in t or "Step 2" in t
                   for t in texts), texts
    assert f"Rollout: paused, canary {canary_weight}%" in texts[0], texts[0]  # the root's status

    [entry] = meshbot_entries(mesh, canary)
    assert (entry.actor, entry.action, entry.outcome) == ("meshbot", action, "failed"), entry
    assert entry.after == live == entry.before, entry

    assert mesh.weights(SERVICE) == {"stable": 100 - canary_weight, "canary": canary_weight}
    now = rollout()
    assert now.phase is Phase.PAUSED and now.weight == canary_weight, (now.phase, now.weight)


@pytest.mark.parametrize("status", [403, 422])
def test_the_analysis_meeting_a_refused_write_says_it_once_and_stops(
        emulated_mesh: EmulatedMesh, no_prometheus: MetricsSource, status: int) -> None:
    mesh = emulated_mesh
    canary = a_running_canary(mesh)
    refuse_writes(mesh, status)
    before = vs_writes(mesh)
    when = tick_until_rolled_back(mesh, no_prometheus)
    tried = vs_writes(mesh) - before
    assert tried >= 1  # the rollback's write was sent, and refused
    ticks_go_on(mesh, no_prometheus, when)

    assert vs_writes(mesh) - before == tried  # never tried again
    assert_said_audited_paused(mesh, canary, status, "rollback")


def test_the_reconcile_meeting_a_refused_write_says_it_once_and_stops(
        emulated_mesh: EmulatedMesh, no_prometheus: MetricsSource) -> None:
    mesh = emulated_mesh
    canary = a_running_canary(mesh)
    # The analysis's rollback write meets a 500 (left to the reconcile), the reconcile's a 403.
    mesh.cluster.fail(500, method="PATCH", plural="virtualservices", name=SERVICE)
    refuse_writes(mesh, 403)
    when = tick_until_rolled_back(mesh, no_prometheus)
    assert rollout().phase is Phase.ROLLED_BACK  # decided, not written: the reconcile's now
    before = vs_writes(mesh)
    reconcile(context.current(), now=when + GRACE_S + 1)
    tried = vs_writes(mesh) - before
    assert tried >= 1
    ticks_go_on(mesh, no_prometheus, when + GRACE_S + 1)

    assert vs_writes(mesh) - before == tried
    assert_said_audited_paused(mesh, canary, 403, "reconcile")



def test_a_refused_write_whose_weights_cannot_be_read_back_is_said_once_they_can(
        emulated_mesh: EmulatedMesh, no_prometheus: MetricsSource) -> None:
    """The analysis's rollback is refused for good (403), and the read back that would say at
    which weights the rollout stops fails too (a 500). Nothing is said, audited or paused on a
    guess: the reconcile looks again after ``READ_BACK_RETRY_S``, meets the same refusal, reads
    the weights back, and then the phase, the audit, the thread and the mesh say the same."""
    mesh = emulated_mesh
    canary = a_running_canary(mesh)
    mesh.cluster.fail(403, method="PATCH", plural="virtualservices", name=SERVICE, times=1000,
                      then=Fault("GET", "virtualservices", SERVICE, 1, status=500))
    when = tick_until_rolled_back(mesh, no_prometheus)
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    assert meshbot_entries(mesh, canary) == []  # nothing audited on a guess
    assert not [t for t in thread_texts(mesh) if "could not write" in t]
    ctx = context.current()
    assert ctx.store.unapplied_since(float("inf")) == [SERVICE]  # still being looked after

    reconcile(ctx, now=when + GRACE_S + 1)  # inside the wait: not tried again yet
    assert meshbot_entries(mesh, canary) == []
    reconcile(ctx, now=when + READ_BACK_RETRY_S + 1)
    ticks_go_on(mesh, no_prometheus, when + READ_BACK_RETRY_S + 1)

    assert_said_audited_paused(mesh, canary, 403, "reconcile")
    assert ctx.store.unapplied_since(float("inf")) == []
