"""A write that landed but was not acknowledged is retried; the thread and the audit still say
what the split was before the request, not what the retry read."""

from __future__ import annotations

from typing import Any

from jobs.adapters.audit import AuditLog
from meshbot.commands import Verb
from tests.fixtures.meshbot import EmulatedMesh
from tests.integration.test_worker_jobs import (
    GROUP,
    NS,
    SERVICE,
    VERSION,
    release_retries,
    submit,
    thread_texts,
)


def the_slow_write_landed(mesh: EmulatedMesh, *, stable: int, canary: int) -> None:
    """The split meshbot's unacknowledged write asked for is in the cluster after all."""
    def landed(vs: dict[str, Any]) -> None:
        for destination in vs["spec"]["http"][0]["route"]:
            is_canary = destination["destination"]["subset"] == "canary"
            destination["weight"] = canary if is_canary else stable
    mesh.cluster.change(GROUP, VERSION, "virtualservices", NS, SERVICE, landed)


def test_a_retry_after_a_landed_write_reports_the_real_before(
        emulated_mesh: EmulatedMesh) -> None:
    mesh = emulated_mesh
    mesh.cluster.fail(503, method="PATCH", plural="virtualservices", name=SERVICE)
    request = submit(mesh, Verb.CANARY, 10)
    mesh.run_jobs()  # the first attempt read 100/0; its write "timed out"

    the_slow_write_landed(mesh, stable=90, canary=10)

    release_retries(mesh.redis)
    mesh.run_jobs()  # the retry reads 90/10: nothing left to write

    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    applied = [t for t in thread_texts(mesh) if "Weights applied" in t]
    assert applied and "(was stable 100 / canary 0)" in applied[-1], applied
    [entry] = [e for e in AuditLog(mesh.redis).last(SERVICE, 10) if e.request_id == request.id
               and e.outcome == "done"]
    assert entry.before is not None and "100" in entry.before and "stable 90" not in entry.before


def test_a_rollback_retried_after_its_write_landed_says_what_it_rolled_back(
        emulated_mesh: EmulatedMesh) -> None:
    """Before, the retry read 100/0 and told the thread "Nothing to roll back", auditing
    before = 100/0, though the request itself had moved the traffic from 90/10."""
    mesh = emulated_mesh
    submit(mesh, Verb.CANARY, 10)
    mesh.run_jobs()
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    mesh.cluster.fail(503, method="PATCH", plural="virtualservices", name=SERVICE)
    request = submit(mesh, Verb.ROLLBACK)
    mesh.run_jobs()  # the first attempt read 90/10; its write "timed out"

    the_slow_write_landed(mesh, stable=100, canary=0)

    release_retries(mesh.redis)
    mesh.run_jobs()

    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    texts = thread_texts(mesh)
    assert not any("Nothing to roll back" in t for t in texts), texts
    assert any("stable 90 / canary 10" in t and "back" in t.lower() for t in texts[-3:]), texts
    [entry] = [e for e in AuditLog(mesh.redis).last(SERVICE, 10) if e.request_id == request.id
               and e.outcome == "done"]
    assert entry.before is not None and "stable 90" in entry.before
