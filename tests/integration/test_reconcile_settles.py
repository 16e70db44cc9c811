"""What the reconcile does with a mark its writer left behind: waits while the job lives (its
retries included), writes nothing a refused or failed job decided, and settles a job that gave
up to the safe state — so the rollout's phase, the thread, the audit and the mesh agree."""

from __future__ import annotations

import time

from jobs.adapters.audit import AuditLog
from jobs.adapters.rollout_store import RolloutStore
from jobs.domain.rollout import Phase
from jobs.runtime import context
from jobs.runtime.reconcile import GRACE_S, reconcile
from meshbot.commands import Verb
from tests.fixtures.meshbot import CHANNEL, EmulatedMesh
from tests.integration.test_worker_jobs import (
    SERVICE,
    outcomes,
    release_retries,
    submit,
    thread_texts,
)

LATER = GRACE_S + 60  # well past the grace: only the job's own state decides


def test_a_job_waiting_for_its_retry_is_left_alone(emulated_mesh: EmulatedMesh) -> None:
    emulated_mesh.cluster.fail(503, method="PATCH", plural="virtualservices", name=SERVICE)
    submit(emulated_mesh, Verb.CANARY, 10)
    emulated_mesh.run_jobs()  # the write failed; RQ scheduled a retry
    assert reconcile(context.current(), now=time.time() + LATER) == []
    assert emulated_mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert RolloutStore(emulated_mesh.redis).unapplied_since(time.time() + LATER) == [SERVICE]
    release_retries(emulated_mesh.redis)
    emulated_mesh.run_jobs()  # the retry writes it, and clears the mark
    assert emulated_mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    assert RolloutStore(emulated_mesh.redis).unapplied_since(time.time() + LATER) == []


def test_a_canary_whose_writes_keep_failing_ends_rolled_back_everywhere(
        emulated_mesh: EmulatedMesh) -> None:
    emulated_mesh.cluster.fail(500, method="PATCH", plural="virtualservices", name=SERVICE,
                               times=1000)
    request = submit(emulated_mesh, Verb.CANARY, 10)
    emulated_mesh.run_jobs()
    while release_retries(emulated_mesh.redis):
        emulated_mesh.run_jobs()
    assert outcomes(emulated_mesh, request)[-1] == "failed"  # the job gave up

    reconcile(context.current(), now=time.time() + LATER)

    rollout = RolloutStore(emulated_mesh.redis).get(SERVICE)
    assert rollout is not None and rollout.phase is Phase.ROLLED_BACK
    assert emulated_mesh.weights(SERVICE) == {"stable": 100, "canary": 0}  # never 90/10
    texts = thread_texts(emulated_mesh)
    assert "ended without writing its weights" in texts[-1]
    assert not any("stopped before writing" in t for t in texts)
    entries = AuditLog(emulated_mesh.redis).last(SERVICE, 10)
    assert entries[0].action == "reconcile" and "stable 100 / canary 0" in (entries[0].after or "")
    assert RolloutStore(emulated_mesh.redis).unapplied_since(time.time() + LATER) == []


def test_a_promote_refused_after_marking_writes_nothing_later(
        emulated_mesh: EmulatedMesh) -> None:
    """Promote without SLO evidence is refused inside the state change: no mark may outlive
    it, or the reconcile would write weights nobody decided and blame a worker."""
    submit(emulated_mesh, Verb.CANARY, 10)
    emulated_mesh.run_jobs()
    submit(emulated_mesh, Verb.PROMOTE)
    emulated_mesh.run_jobs()
    assert RolloutStore(emulated_mesh.redis).unapplied_since(time.time() + LATER) == []
    assert reconcile(context.current(), now=time.time() + LATER) == []
    assert emulated_mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    assert not any("stopped before writing" in m.text
                   for m in emulated_mesh.slack.messages(CHANNEL))


def test_a_settle_whose_own_write_failed_says_so_when_it_lands(
        emulated_mesh: EmulatedMesh) -> None:
    """The canary's job gave up; the tick that settles it rolls the rollout back but cannot
    write (Kubernetes answers 500 once). The next tick writes it: the thread and the audit
    still say why — the change ended without writing — not that a worker stopped."""
    mesh = emulated_mesh
    mesh.cluster.fail(500, method="PATCH", plural="virtualservices", name=SERVICE, times=1000)
    request = submit(mesh, Verb.CANARY, 10)
    mesh.run_jobs()
    while release_retries(mesh.redis):
        mesh.run_jobs()
    assert outcomes(mesh, request)[-1] == "failed"  # the job gave up

    mesh.cluster.fail(500, method="GET", plural="virtualservices", name=SERVICE)
    assert reconcile(context.current(), now=time.time() + LATER) == []  # its write failed
    rollout = RolloutStore(mesh.redis).get(SERVICE)
    assert rollout is not None and rollout.phase is Phase.ROLLED_BACK

    assert reconcile(context.current(), now=time.time() + LATER + 1) == [SERVICE]
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    texts = thread_texts(mesh)
    assert "ended without writing its weights" in texts[-1]
    assert not any("stopped before writing" in t for t in texts)
    entry = AuditLog(mesh.redis).last(SERVICE, 10)[0]
    assert entry.action == "reconcile" and "ended without writing" in entry.detail
    assert RolloutStore(mesh.redis).unapplied_since(time.time() + LATER) == []
