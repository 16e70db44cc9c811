"""A rollback wins over every change accepted before it: a canary acked before a rollback of the
same service, still queued when the rollback runs, is refused as overtaken — never applied
after it — and the caller and the audit say so."""

from __future__ import annotations

from jobs.adapters.audit import AuditLog
from meshbot.commands import Verb
from tests.fixtures.meshbot import EmulatedMesh
from tests.integration.test_worker_jobs import SERVICE, submit, told


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
