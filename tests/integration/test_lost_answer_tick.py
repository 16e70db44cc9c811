"""A weight write of the analysis or the reconcile whose answer is lost: the Kubernetes API
commits the PATCH and answers 503 (a proxy's timeout, a dropped connection). Before, the
analysis left it to the reconcile, which found the weights already as decided and cleared its
mark in silence: the mesh changed and nothing was audited. The mesh, the rollout's phase, the
thread and the audit must say the same: rolled back, said once, audited once — not "meshbot
wrote them now" for a write it did not make, and not unaudited."""

from __future__ import annotations

from jobs.adapters.audit import AuditLog
from jobs.adapters.prometheus import MetricsSource
from jobs.domain.rollout import Phase
from jobs.runtime import context
from jobs.runtime.reconcile import GRACE_S, reconcile
from tests.fixtures.meshbot import CHANNEL, EmulatedMesh
from tests.integration.test_unwritable_weights import (
    a_running_canary,
    no_prometheus,  # noqa: F401 (a fixture)
    policy_path,  # noqa: F401 (a fixture: no SLO evidence for a second rolls back)
    rollout,
    tick_until_rolled_back,
    ticks_go_on,
    vs_writes,
)
from tests.integration.test_worker_jobs import SERVICE


def everything_said(mesh: EmulatedMesh) -> list[str]:
    """Every thread in the channel: the canary's, and the rollback's channel alert."""
    return [m.text for root in mesh.slack.roots(CHANNEL)
            for m in mesh.slack.thread(CHANNEL, root.ts)]


def test_an_automatic_rollback_whose_answer_was_lost_is_said_and_audited_once(
        emulated_mesh: EmulatedMesh, no_prometheus: MetricsSource) -> None:  # noqa: F811
    mesh = emulated_mesh
    canary = a_running_canary(mesh)
    mesh.cluster.lose_answer(503, method="PATCH", plural="virtualservices", name=SERVICE)
    before = vs_writes(mesh)
    when = tick_until_rolled_back(mesh, no_prometheus)
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}  # it landed
    reconcile(context.current(), now=when + GRACE_S + 1)
    ticks_go_on(mesh, no_prometheus, when + GRACE_S + 1)
    context.current().notifier.flush()

    assert vs_writes(mesh) - before == 1  # the write that landed; nothing written again
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert rollout().phase is Phase.ROLLED_BACK
    texts = everything_said(mesh)
    assert not any("wrote them now" in t or "stopped before writing" in t
                   or "could not write" in t for t in texts), texts
    mine = [e for e in AuditLog(mesh.redis).last(SERVICE, 50) if e.request_id != canary.id]
    assert [(e.actor, e.outcome) for e in mine] == [("meshbot", "done")], mine
    [entry] = mine
    assert entry.before == "stable 90 / canary 10" and entry.after == "stable 100 / canary 0", \
        entry
    rolled = [t for t in texts if "rolled back" in t.lower()]
    assert rolled, texts


def test_the_reconciles_write_whose_answer_was_lost_is_said_and_audited_once(
        emulated_mesh: EmulatedMesh, no_prometheus: MetricsSource) -> None:  # noqa: F811
    """The analysis's rollback meets a 500 (nothing written: left to the reconcile), and the
    reconcile's own write lands with its answer lost."""
    mesh = emulated_mesh
    canary = a_running_canary(mesh)
    mesh.cluster.fail(500, method="PATCH", plural="virtualservices", name=SERVICE)
    when = tick_until_rolled_back(mesh, no_prometheus)
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}  # decided, not written
    mesh.cluster.lose_answer(503, method="PATCH", plural="virtualservices", name=SERVICE)
    reconcile(context.current(), now=when + GRACE_S + 1)
    ticks_go_on(mesh, no_prometheus, when + GRACE_S + 1)
    context.current().notifier.flush()

    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert rollout().phase is Phase.ROLLED_BACK
    mine = [e for e in AuditLog(mesh.redis).last(SERVICE, 50) if e.request_id != canary.id]
    assert [(e.actor, e.action, e.outcome) for e in mine] == [("meshbot", "reconcile", "done")], \
        mine
    texts = everything_said(mesh)
    assert len([t for t in texts if "meshbot wrote them now: stable 100 / canary 0" in t]) == 1, \
        texts
    assert not any("could not write" in t for t in texts), texts
