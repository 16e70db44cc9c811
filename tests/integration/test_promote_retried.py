"""A promote whose VirtualService write is answered 5xx is retried by RQ: the retry recognises
its own first attempt (which already said "promoted" in the rollout's state) and writes the
weights, so the phase, the mesh, the thread and the audit all end promoted — never a refusal
("no rollout to promote") followed by the reconcile rolling the promote back."""

from __future__ import annotations

import time

from jobs.adapters.audit import AuditLog
from jobs.adapters.rollout_store import RolloutStore
from jobs.domain import rollout as machine
from jobs.domain.rollout import Event, Phase
from jobs.runtime import context
from jobs.runtime.reconcile import GRACE_S, reconcile
from meshbot.commands import Request, Verb
from tests.fixtures.meshbot import EmulatedMesh
from tests.integration.test_worker_jobs import (
    SERVICE,
    release_retries,
    submit,
    thread_texts,
    told,
)


def _ready_to_promote(mesh: EmulatedMesh) -> None:
    """A canary at 10 whose check passed (the analysis's verdict, as the tick records it)."""
    submit(mesh, Verb.CANARY, 10)
    mesh.run_jobs()
    RolloutStore(mesh.redis).update(SERVICE, lambda r: machine.apply(
        r, Event.CHECK_PASSED, time.time(), "checks passed") if r else None)


def _promote_through_5xx(mesh: EmulatedMesh, verb: Verb, percent: int | None) -> Request:
    mesh.cluster.fail(500, method="PATCH", plural="virtualservices", name=SERVICE, times=2)
    request = submit(mesh, verb, percent)
    mesh.run_jobs()
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}  # not written yet
    while release_retries(mesh.redis):  # RQ's retries, as their time comes
        mesh.run_jobs()
    return request


def _assert_promoted_everywhere(mesh: EmulatedMesh, request: Request) -> None:
    assert mesh.weights(SERVICE) == {"stable": 0, "canary": 100}
    rollout = RolloutStore(mesh.redis).get(SERVICE)
    assert rollout is not None and rollout.phase is Phase.PROMOTED
    assert told(mesh, request) == []  # no refusal, no failure
    ours = [e for e in AuditLog(mesh.redis).last(SERVICE, 30) if e.request_id == request.id]
    assert [e.outcome for e in ours] == ["done"]
    assert ours[0].before == "stable 90 / canary 10"  # what the first attempt found
    texts = thread_texts(mesh)
    assert sum("Promoted" in t for t in texts) == 1
    assert "(was stable 90 / canary 10)" in texts[-1]

    # Later ticks find nothing to settle: the promote stands, nobody is blamed.
    assert reconcile(context.current(), now=time.time() + GRACE_S + 60) == []
    assert mesh.weights(SERVICE) == {"stable": 0, "canary": 100}
    rollout = RolloutStore(mesh.redis).get(SERVICE)
    assert rollout is not None and rollout.phase is Phase.PROMOTED
    assert not any("stopped before writing" in t or "ended without writing" in t
                   for t in thread_texts(mesh))


def test_a_promote_answered_5xx_is_retried_to_promoted(emulated_mesh: EmulatedMesh) -> None:
    _ready_to_promote(emulated_mesh)
    request = _promote_through_5xx(emulated_mesh, Verb.PROMOTE, None)
    _assert_promoted_everywhere(emulated_mesh, request)


def test_a_canary_at_100_answered_5xx_is_retried_to_promoted(
        emulated_mesh: EmulatedMesh) -> None:
    """``/mesh canary <service> 100`` is a promote, and its retry is one too."""
    _ready_to_promote(emulated_mesh)
    request = _promote_through_5xx(emulated_mesh, Verb.CANARY, 100)
    _assert_promoted_everywhere(emulated_mesh, request)
