"""A request ends once. A worker killed after its job recorded how the request ended, and
before RQ marked the job finished, leaves the job to be taken over and run again; that run
must not end the request a second time, differently (the soak saw a rollout refused, then
"overtaken" by a rollback acked meanwhile). Real Redis, the Kubernetes emulator and the Slack
stand-in; the job's second run is called as RQ calls it."""

from __future__ import annotations

from jobs.adapters.audit import AuditLog
from jobs.runtime.tasks import handle_request
from meshbot.commands import Verb
from tests.fixtures.meshbot import EmulatedMesh
from tests.integration.test_worker_jobs import SERVICE, submit


def outcomes(mesh: EmulatedMesh, request_id: str) -> list[str]:
    return [e.outcome for e in AuditLog(mesh.redis).last(SERVICE, 50)
            if e.request_id == request_id]


def test_a_refused_request_run_again_is_not_run_again(emulated_mesh: EmulatedMesh) -> None:
    mesh = emulated_mesh
    promote = submit(mesh, Verb.PROMOTE)  # nothing to promote: refused
    mesh.run_jobs()
    assert outcomes(mesh, promote.id) == ["refused"]
    told = len(mesh.slack.responses())
    submit(mesh, Verb.ROLLBACK)  # acked after it: a first run now would be "overtaken"
    assert handle_request(promote.model_dump(mode="json")) == "refused"
    assert outcomes(mesh, promote.id) == ["refused"]
    assert len(mesh.slack.responses()) == told  # the caller is not told twice


def test_a_request_that_did_not_end_runs(emulated_mesh: EmulatedMesh) -> None:
    """Only an end stops a second run: a job whose first run ended nothing runs in full."""
    mesh = emulated_mesh
    canary = submit(mesh, Verb.CANARY, 10)
    assert handle_request(canary.model_dump(mode="json")) != "refused"
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
