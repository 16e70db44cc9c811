"""A rollback wins over a route edit whose job never made its after-write check: the edit's
VirtualService write (`/mesh ab` adding its header route, `/mesh mirror` its mirror, `/mesh
bluegreen` its preview route) was on the wire when the rollback ran (the rollback found nothing
to remove), the write landed after it, and the job that sent it ended without looking again —
here its write answered nothing in time, as when its worker is SIGKILLed, so the job is run
again — and that second run is refused as overtaken at its start. The VirtualService must still
end as the rollback left it: no header route, no mirror."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from jobs.adapters.audit import AuditLog
from jobs.domain.routes_match import current_header, current_mirror
from meshbot.commands import Command, Request, Verb
from tests.fixtures.meshbot import CHANNEL, EmulatedMesh
from tests.integration.test_rollback_wins import _taken_by_another_worker
from tests.integration.test_worker_jobs import (
    SERVICE,
    release_retries,
    submit,
    submit_command,
    told,
)

DEADLINE_S = 30.0
EDITS = {
    "ab": Command(verb=Verb.AB, target=SERVICE, options={"header": "x-canary", "value": "yes"}),
    "mirror": Command(verb=Verb.MIRROR, target=SERVICE, percent=50,
                      options={"confirm": "yes"}),
    "bluegreen": Command(verb=Verb.BLUEGREEN, target=SERVICE),  # its preview route
}


def _wait_for(condition: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        assert time.monotonic() < deadline, f"never: {condition}"
        time.sleep(0.05)


def _routes(mesh: EmulatedMesh) -> tuple[object, object]:
    vs = mesh.cluster.get("networking.istio.io", "v1beta1", "virtualservices", "production",
                          SERVICE)
    return current_header(vs), current_mirror(vs, SERVICE, "production")


@pytest.mark.parametrize("verb", sorted(EDITS))
def test_a_route_edit_that_landed_unchecked_after_a_rollback_is_removed(
        emulated_mesh: EmulatedMesh, verb: str) -> None:
    mesh = emulated_mesh
    held = mesh.cluster.hold(method="PATCH", plural="virtualservices", timeout=60)
    rollbacks: list[Request] = []

    def rollback_while_the_write_is_held() -> None:
        assert held.reached.wait(DEADLINE_S), f"the {verb} job never wrote its route"
        rollback = submit(mesh, Verb.ROLLBACK)  # acked after the edit, while it writes
        rollbacks.append(rollback)
        _taken_by_another_worker(mesh, rollback).join(DEADLINE_S)  # run to its end

    other = threading.Thread(target=rollback_while_the_write_is_held, name="rollback")
    other.start()
    edit = submit_command(mesh, EDITS[verb])
    # The edit's job: its write is held past the client's timeout; the job is retried.
    mesh.run_jobs()
    other.join(DEADLINE_S)
    assert not other.is_alive() and rollbacks
    assert _routes(mesh) == (None, None)  # the rollback found nothing to remove

    held.release()  # the edit's write lands now, after the rollback, and nobody checks it
    _wait_for(f"the {verb} write landed", lambda: _routes(mesh) != (None, None))
    while release_retries(mesh.redis):  # the edit's job again: overtaken at its start
        mesh.run_jobs()

    assert _routes(mesh) == (None, None)
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    outcomes = [(e.request_id, e.outcome) for e in AuditLog(mesh.redis).last(SERVICE, 30)]
    assert (edit.id, "overtaken") in outcomes and (edit.id, "done") not in outcomes
    assert (rollbacks[0].id, "done") in outcomes
    assert sum(1 for t in told(mesh, edit)
               if "a rollback of `payment-service` was accepted after it" in t) == 1
    roots = [m for m in mesh.slack.roots(CHANNEL) if "Rollback" not in m.text]
    assert len(roots) == 1, [m.text for m in mesh.slack.roots(CHANNEL)]
    said = [m.text for m in mesh.slack.thread(CHANNEL, roots[0].ts)]
    assert "was accepted after it, and a rollback wins" in said[-1], said
