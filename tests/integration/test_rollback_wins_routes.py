"""A rollback wins over route edits acked before it, too: a header route (`/mesh ab`), a mirror
(`/mesh mirror`) or a blue-green's preview route (`/mesh bluegreen`) whose job is past its start
when the rollback is acked and run to its end by another worker — still reading the cluster, or
with its write on the wire (the rollback finds nothing to remove, then the write lands) — is
refused as overtaken, and the VirtualService ends as the rollback left it: stable 100, no
header route, no mirror."""

from __future__ import annotations

import pytest

from jobs.adapters.audit import AuditLog
from jobs.domain.routes_match import current_header, current_mirror
from meshbot.commands import Command, Verb
from tests.fixtures.meshbot import CHANNEL, EmulatedMesh
from tests.integration.test_rollback_wins import _taken_by_another_worker
from tests.integration.test_worker_jobs import SERVICE, submit, submit_command, told

COMMANDS = {
    "ab": Command(verb=Verb.AB, target=SERVICE,
                  options={"header": "x-canary", "value": "yes"}),
    "mirror": Command(verb=Verb.MIRROR, target=SERVICE, percent=50,
                      options={"confirm": "yes"}),
    "bluegreen": Command(verb=Verb.BLUEGREEN, target=SERVICE),
}
# Where the edit's job is when the rollback is acked and run: reading the cluster (past its
# start), or its VirtualService write held on the wire.
HOLDS = {"reading": ("GET", "destinationrules"), "writing": ("PATCH", "virtualservices")}


@pytest.mark.parametrize("hold", sorted(HOLDS))
@pytest.mark.parametrize("verb", sorted(COMMANDS))
def test_a_route_edit_acked_before_a_rollback_never_lands_after_it(
        emulated_mesh: EmulatedMesh, verb: str, hold: str) -> None:
    mesh = emulated_mesh
    method, plural = HOLDS[hold]
    held = mesh.cluster.hold(method=method, plural=plural)
    edit = submit_command(mesh, COMMANDS[verb])  # acked first
    other = _taken_by_another_worker(mesh, edit)
    try:
        assert held.reached.wait(30), f"the {verb} job never reached the cluster"
        rollback = submit(mesh, Verb.ROLLBACK)  # acked while the edit's job runs
        mesh.run_jobs()  # the rollback runs to its end meanwhile
    finally:
        held.release()
        other.join(60)
    assert not other.is_alive()

    vs = mesh.cluster.get("networking.istio.io", "v1beta1", "virtualservices", "production",
                          SERVICE)
    assert current_header(vs) is None
    assert current_mirror(vs, SERVICE, "production") is None
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    outcomes = [(e.request_id, e.outcome) for e in AuditLog(mesh.redis).last(SERVICE, 30)]
    assert (edit.id, "overtaken") in outcomes and (edit.id, "done") not in outcomes
    assert (rollback.id, "done") in outcomes
    assert any("a rollback of `payment-service` was accepted after it" in t
               for t in told(mesh, edit))
    roots = [m for m in mesh.slack.roots(CHANNEL) if "Rollback" not in m.text]
    assert len(roots) == 1, [m.text for m in mesh.slack.roots(CHANNEL)]
    said = [m.text for m in mesh.slack.thread(CHANNEL, roots[0].ts)]
    assert "was accepted after it, and a rollback wins" in said[-1], said
