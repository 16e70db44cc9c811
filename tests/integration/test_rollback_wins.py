"""A rollback wins over every change accepted before it: a canary acked before a rollback of the
same service, still queued when the rollback runs — or already running, its job past the start
— is refused as overtaken — never applied after it — and the caller and the audit say so."""

from __future__ import annotations

import threading

from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs.adapters.audit import AuditLog
from jobs.adapters.rollout_store import RolloutStore
from jobs.domain.rollout import Phase
from jobs.runtime import api
from meshbot.commands import Request, Verb
from meshbot.settings import Settings
from tests.fixtures.meshbot import CHANNEL, EmulatedMesh
from tests.integration.test_worker_jobs import SERVICE, submit, told


def assert_told_overtaken(mesh: EmulatedMesh, canary: Request, rollback: Request) -> list[str]:
    """The canary ended overtaken (audited, told, said last in its thread, no weights applied)
    and the rollback done; what the canary's thread says."""
    outcomes = [(e.request_id, e.outcome) for e in AuditLog(mesh.redis).last(SERVICE, 20)]
    assert (canary.id, "overtaken") in outcomes and (canary.id, "done") not in outcomes
    assert (rollback.id, "done") in outcomes
    assert any("a rollback of `payment-service` was accepted after it" in t
               for t in told(mesh, canary))
    canary_root = next(m for m in mesh.slack.roots(CHANNEL) if "canary" in m.text.lower())
    said = [m.text for m in mesh.slack.thread(CHANNEL, canary_root.ts)]
    assert "was accepted after it, and a rollback wins" in said[-1], said
    assert not any("Weights applied" in t for t in said)
    return said


def test_a_change_acked_before_a_rollback_never_lands_after_it(
        emulated_mesh: EmulatedMesh) -> None:
    mesh = emulated_mesh
    submit(mesh, Verb.CANARY, 10)
    mesh.run_jobs()
    later_canary = submit(mesh, Verb.CANARY, 20)  # acked, still queued...
    submit(mesh, Verb.ROLLBACK)  # ...when a rollback is acked: it jumps the queue
    mesh.run_jobs()

    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert any("a rollback of `payment-service` was accepted after it" in t
               for t in told(mesh, later_canary))
    outcomes = {e.request_id: e.outcome for e in AuditLog(mesh.redis).last(SERVICE, 20)}
    assert outcomes[later_canary.id] == "overtaken"


def test_a_change_acked_after_the_rollback_runs(emulated_mesh: EmulatedMesh) -> None:
    mesh = emulated_mesh
    submit(mesh, Verb.ROLLBACK)
    mesh.run_jobs()
    submit(mesh, Verb.CANARY, 10)
    mesh.run_jobs()
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}


def _taken_by_another_worker(mesh: EmulatedMesh, request: Request) -> threading.Thread:
    """The request's job, dequeued and performed by a second worker (a thread), as RQ's
    worker performs a job; the test's own worker runs the rest of the queue meanwhile."""
    job = Job.fetch(api.job_id(request.id), connection=mesh.redis, serializer=JSONSerializer)
    Queue(Settings().queue_name, connection=mesh.redis, serializer=JSONSerializer).remove(job)
    worker = threading.Thread(target=job.perform, name="other-worker")
    worker.start()
    return worker


def test_a_running_change_acked_before_a_rollback_never_lands_after_it(
        emulated_mesh: EmulatedMesh) -> None:
    """The canary's job is past its start (and its overtaken check) when the rollback is
    acked, and another worker runs the rollback to its end meanwhile: the canary must not
    commit its rollout nor write its weight after it."""
    mesh = emulated_mesh
    # The canary's first read of the cluster waits until the rollback has run.
    held = mesh.cluster.hold(method="GET", plural="destinationrules")
    canary = submit(mesh, Verb.CANARY, 10)  # acked first
    other = _taken_by_another_worker(mesh, canary)
    try:
        assert held.reached.wait(30), "the canary's job never read the cluster"
        rollback = submit(mesh, Verb.ROLLBACK)  # acked while the canary's job runs
        mesh.run_jobs()  # the test's worker runs the rollback to its end
        assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    finally:
        held.release()
        other.join(60)
    assert not other.is_alive()

    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    # The canary's thread, opened before it was overtaken, ends saying so, and no weights.
    assert_told_overtaken(mesh, canary, rollback)
    # No rollout of the canary's was committed: /mesh status shows none in progress.
    rollout = RolloutStore(mesh.redis).get(SERVICE)
    assert rollout is None or rollout.id != canary.id


def test_a_rollback_acked_while_the_change_is_writing_its_weight_wins(
        emulated_mesh: EmulatedMesh) -> None:
    """The canary has committed its rollout and its VirtualService write is on the wire when
    the rollback is acked and run to its end by another worker (it finds the mesh still at
    100/0, so it writes nothing); then the canary's write lands. The rollback was the last
    command accepted: the mesh ends stable 100, the rollout rolled back, and the canary is
    told, audited and said in its thread as overtaken, its weight written back."""
    mesh = emulated_mesh
    held = mesh.cluster.hold(method="PATCH", plural="virtualservices")
    canary = submit(mesh, Verb.CANARY, 10)
    other = _taken_by_another_worker(mesh, canary)
    try:
        assert held.reached.wait(30), "the canary's job never wrote its weight"
        rollout = RolloutStore(mesh.redis).get(SERVICE)
        assert rollout is not None and rollout.id == canary.id  # committed before the write
        rollback = submit(mesh, Verb.ROLLBACK)  # acked while the canary's write is held
        mesh.run_jobs()  # the rollback runs to its end meanwhile
        assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    finally:
        held.release()  # the canary's write lands now
        other.join(60)
    assert not other.is_alive()

    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    store = RolloutStore(mesh.redis)
    rollout = store.get(SERVICE)
    assert rollout is not None and rollout.phase is Phase.ROLLED_BACK
    assert store.unapplied_since(float("inf")) == []  # nothing left for the reconcile
    said = assert_told_overtaken(mesh, canary, rollback)
    assert "stable 100" in said[-1].replace("*", ""), said  # it says its write was put back
