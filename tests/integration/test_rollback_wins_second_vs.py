"""A service split on two VirtualServices (the mesh's and an ingress gateway's): a canary whose
first write was on the wire when a rollback ran (the rollback found both still at stable 100,
so it wrote nothing) lands after it; the canary's job then stops before its second write, the
rollout being rolled back. What it had written must not stay: both VirtualServices end stable
100, as the rollback set them."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.adapters.audit import AuditLog
from meshbot.commands import Command, Verb
from tests.fixtures.meshbot import EmulatedMesh
from tests.integration.test_rollback_wins import _taken_by_another_worker
from tests.integration.test_runbook_routing import (
    GATEWAY_VS,
    gateway_virtual_service,
    write_runbook_policy,
)
from tests.integration.test_worker_jobs import submit_command

SERVICE = "auth-service"  # on auth-service and istio-system/auth-gateway in that policy


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    return write_runbook_policy(tmp_path)


def test_a_first_write_landed_after_a_rollback_is_put_back(
        emulated_mesh: EmulatedMesh) -> None:
    mesh = emulated_mesh
    gateway_virtual_service(mesh)  # type: ignore[arg-type]  # only its cluster is used
    held = mesh.cluster.hold(method="PATCH", plural="virtualservices", name=SERVICE)
    canary = submit_command(mesh, Command(verb=Verb.CANARY, target=SERVICE, percent=10))
    other = _taken_by_another_worker(mesh, canary)
    try:
        assert held.reached.wait(30), "the canary's job never wrote its weight"
        rollback = submit_command(mesh, Command(verb=Verb.ROLLBACK, target=SERVICE))
        mesh.run_jobs()  # the rollback runs to its end meanwhile, writing nothing
    finally:
        held.release()  # the canary's first write lands now
        other.join(60)
    assert not other.is_alive()

    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert mesh.weights(GATEWAY_VS, "istio-system") == {"stable": 100, "canary": 0}
    outcomes = [(e.request_id, e.outcome) for e in AuditLog(mesh.redis).last(SERVICE, 30)]
    assert (rollback.id, "done") in outcomes
    assert (canary.id, "done") not in outcomes
