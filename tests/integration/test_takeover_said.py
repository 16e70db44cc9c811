"""A command whose worker died is said in its thread: the ticker's takeover tells the thread
once that the worker running it stopped and another is taking it over; and a command found
overtaken at its start (a rollback of its service accepted after it) says so in its thread too,
not only to its caller.

A real ``meshbot worker`` process runs the canary and is SIGKILLed while its VirtualService
write is on the wire (held by the emulator, then answered 504: nothing written). Its lease is
let lapse at once (the key deleted, as ``LEASE_S`` would), then the ticker's takeover duty runs
and an in-process worker runs what was requeued."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rq import Queue
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs.adapters.audit import AuditLog
from jobs.domain.rollout import Phase
from jobs.runtime import api, context
from jobs.runtime.reconcile import GRACE_S, reconcile
from jobs.runtime.takeover import ALIVE_PREFIX, STUCK_S, take_over
from meshbot.commands import Request, Verb
from meshbot.settings import Settings
from playground.processes import MeshbotProcess
from playground.redis_server import free_port
from tests.fixtures.meshbot import CHANNEL, EmulatedMesh
from tests.integration.test_worker_jobs import SERVICE, release_retries, submit, told

TAKEN_OVER = "stopped before finishing it; another worker is taking the command over"
OVERTAKEN = "was accepted after it, and a rollback wins"


@pytest.fixture
def killed_mid_write(emulated_mesh: EmulatedMesh, tmp_path: Path) -> Iterator[Request]:
    """A canary whose worker was killed after it opened its thread and committed its rollout,
    its weight not written; the worker's lease lapsed."""
    mesh = emulated_mesh
    held = mesh.cluster.hold(method="PATCH", plural="virtualservices", name=SERVICE, timeout=2)
    canary = submit(mesh, Verb.CANARY, 10)
    env = {**mesh.env, "PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}"}
    worker = MeshbotProcess(["worker"], env, tmp_path / "worker.log").start()
    try:
        assert held.reached.wait(30), "the worker never wrote the canary's weight"
        worker.kill()
    finally:
        worker.stop()
    job = Job.fetch(api.job_id(canary.id), connection=mesh.redis, serializer=JSONSerializer)
    assert job.get_status(refresh=True) == JobStatus.STARTED and job.worker_name
    mesh.redis.delete(ALIVE_PREFIX + job.worker_name)  # its lease lapses (LEASE_S) at once
    yield canary


def canary_thread(mesh: EmulatedMesh) -> list[str]:
    root = next(m for m in mesh.slack.roots(CHANNEL) if "canary" in m.text.lower())
    return [m.text for m in mesh.slack.thread(CHANNEL, root.ts)]


def queues() -> list[str]:
    return api.queue_names(Settings().queue_name)


def test_a_taken_over_command_says_so_in_its_thread_once(
        emulated_mesh: EmulatedMesh, killed_mid_write: Request) -> None:
    mesh, canary = emulated_mesh, killed_mid_write
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}  # the write never landed
    assert take_over(mesh.redis, queues()) == [api.job_id(canary.id)]
    assert take_over(mesh.redis, queues()) == []  # a second tick finds nothing to take
    mesh.run_jobs()  # another worker runs it

    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    said = canary_thread(mesh)
    notes = [t for t in said if TAKEN_OVER in t]
    assert len(notes) == 1, said
    assert f"`/mesh canary {SERVICE} 10`" in notes[0]
    # Said after what the first worker said (its root) and before what the second did.
    applied = [i for i, t in enumerate(said) if "Weights applied" in t]
    assert len(applied) == 1 and said.index(notes[0]) < applied[0], said
    assert told(mesh, canary) == []


def test_a_taken_over_command_overtaken_at_its_start_says_so_in_its_thread(
        emulated_mesh: EmulatedMesh, killed_mid_write: Request) -> None:
    """The canary's rollout was committed, so the rollback (acked while the canary waits to be
    taken over) reports into the canary's thread; the canary, run again after it, is found
    overtaken at its start: its thread, not only its caller, hears that it was not applied."""
    mesh, canary = emulated_mesh, killed_mid_write
    assert take_over(mesh.redis, queues()) == [api.job_id(canary.id)]
    rollback = submit(mesh, Verb.ROLLBACK)
    mesh.run_jobs()  # the rollback first (it jumps the queue), then the canary

    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    rollout = context.current().store.get(SERVICE)
    assert rollout is not None and rollout.phase is Phase.ROLLED_BACK
    said = canary_thread(mesh)
    overtaken = [t for t in said if OVERTAKEN in t]
    assert len(overtaken) == 1 and said[-1] == overtaken[0], said
    assert f"`/mesh canary {SERVICE} 10` was not applied" in overtaken[0]
    assert not any("Weights applied" in t for t in said), said
    assert any(OVERTAKEN in t for t in told(mesh, canary))
    outcomes = [(e.request_id, e.outcome) for e in AuditLog(mesh.redis).last(SERVICE, 20)]
    assert outcomes.count((canary.id, "overtaken")) == 1
    assert (canary.id, "done") not in outcomes and (rollback.id, "done") in outcomes

    # The ticker's reconcile looks at the mark the canary's dead run left: the mesh is as the
    # rollback wants it, nothing is written, and nothing claims a write.
    reconcile(context.current(), now=time.time() + GRACE_S + 1)
    assert canary_thread(mesh) == said
    assert [e.action for e in AuditLog(mesh.redis).last(SERVICE, 20)].count("reconcile") == 0
    assert context.current().store.unapplied_since(float("inf")) == []


UNSTARTED = "stopped before starting it; the command is back on the queue for another worker"


def test_a_retry_dequeued_by_a_worker_that_died_says_so_in_its_thread_once(
        emulated_mesh: EmulatedMesh) -> None:
    """A canary whose first attempt opened its thread and failed (a 500: retried later); its
    retry is taken from the queue by a worker killed before it started it (what RQ's BLMOVE
    leaves: the job in the intermediate list). The ticker puts it back once it sat there past
    ``STUCK_S``, the thread hears which of the two happened — not started, back on the queue —
    once, and another worker runs it."""
    mesh = emulated_mesh
    mesh.cluster.fail(500, method="PATCH", plural="virtualservices", name=SERVICE)
    canary = submit(mesh, Verb.CANARY, 10)
    mesh.run_jobs()  # the first attempt: its thread opened, its write failed, a retry scheduled
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert release_retries(mesh.redis) == 1
    queue = Queue(Settings().queue_name, connection=mesh.redis, serializer=JSONSerializer)
    intermediate = IntermediateQueue(queue.key, mesh.redis)
    mesh.redis.lmove(queue.key, intermediate.key, "RIGHT", "LEFT")  # dequeued, never started
    assert intermediate.get_job_ids() == [api.job_id(canary.id)]

    t0 = time.time()
    assert take_over(mesh.redis, queues(), now=t0) == []  # first seen: it may be starting
    assert take_over(mesh.redis, queues(), now=t0 + STUCK_S + 0.1) == [api.job_id(canary.id)]
    assert take_over(mesh.redis, queues(), now=t0 + STUCK_S + 1) == []
    mesh.run_jobs()  # another worker runs it

    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    said = canary_thread(mesh)
    notes = [t for t in said if UNSTARTED in t]
    assert len(notes) == 1 and f"`/mesh canary {SERVICE} 10`" in notes[0], said
    assert not any(TAKEN_OVER in t for t in said), said  # it had not started: not "stopped"
    applied = [i for i, t in enumerate(said) if "Weights applied" in t]
    assert len(applied) == 1 and said.index(notes[0]) < applied[0], said
    outcomes = [e.outcome for e in AuditLog(mesh.redis).last(SERVICE, 20)
                if e.request_id == canary.id]
    assert outcomes.count("done") == 1, outcomes
