"""A route edit (`/mesh ab`, `/mesh mirror`, on or off) whose write landed but whose job stopped
before it said so — Slack answered 500 for the thread's report, as a worker killed at that
moment would leave it — is run again by RQ. The retry reads its own write: it must neither
refuse ("nothing to remove") what its first attempt did, nor report its own write as what was
there before. When the Kubernetes API's answer to the write itself was lost (a 503 after it
committed the write), the job reads the object back at once and goes on as written, with no
retry. Either way the thread, the caller and the audit say what the first attempt found and
did, once."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from jobs.adapters.audit import AuditEntry, AuditLog
from jobs.domain.routes_match import current_header, current_mirror
from meshbot.commands import Command, Request, Verb
from playground.slack_workspace import Fault
from tests.fixtures.meshbot import CHANNEL, EmulatedMesh
from tests.integration.test_worker_jobs import (
    SERVICE,
    release_retries,
    submit_command,
    told,
)

AB_ON = Command(verb=Verb.AB, target=SERVICE, options={"header": "x-canary", "value": "yes"})
AB_OFF = Command(verb=Verb.AB, target=SERVICE, switch="off")
MIRROR_ON = Command(verb=Verb.MIRROR, target=SERVICE, percent=50, options={"confirm": "yes"})
MIRROR_OFF = Command(verb=Verb.MIRROR, target=SERVICE, switch="off")
POST = "chat.postMessage"


def vs(mesh: EmulatedMesh) -> dict[str, object]:
    return mesh.cluster.get("networking.istio.io", "v1beta1", "virtualservices", "production",
                            SERVICE)


def run(mesh: EmulatedMesh, command: Command) -> tuple[Request, int]:
    """The command run to its end; how many times RQ ran its job again."""
    request = submit_command(mesh, command)
    mesh.run_jobs()
    retried = 0
    while released := release_retries(mesh.redis):  # RQ's retries, as their time comes
        retried += released
        mesh.run_jobs()
    return request, retried


def fail_the_report(mesh: EmulatedMesh, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slack answers 500 to the next command's second post: its report, after the write."""
    original, lock, seen = mesh.slack.take_fault, threading.Lock(), [0]

    def take(method: str) -> Fault | None:
        if method == POST:
            with lock:
                seen[0] += 1
                if seen[0] == 2:
                    return Fault(500, "fatal_error")
        return original(method)

    monkeypatch.setattr(mesh.slack, "take_fault", take)


def entries(mesh: EmulatedMesh, request: Request) -> list[AuditEntry]:
    return [e for e in AuditLog(mesh.redis).last(SERVICE, 30) if e.request_id == request.id]


def thread(mesh: EmulatedMesh, word: str) -> list[str]:
    roots = [m for m in mesh.slack.roots(CHANNEL) if word in m.text]
    assert roots, [m.text for m in mesh.slack.roots(CHANNEL)]
    return [m.text for m in mesh.slack.thread(CHANNEL, roots[-1].ts)]


Check = Callable[[dict[str, object]], bool]
CASES: dict[str, tuple[Command | None, Command, Check, str, str, str]] = {
    # name: (set up first, the edit retried, the mesh after, its report, its audit detail,
    #        the root's word)
    "ab-on": (None, AB_ON, lambda v: str(current_header(v)) == "x-canary: yes",
              "Header route `x-canary: yes`", "header route none → x-canary: yes to canary",
              "*Header route*"),
    "ab-off": (AB_ON, AB_OFF, lambda v: current_header(v) is None,
               "Header route `x-canary: yes` removed", "header route x-canary: yes → none",
               "*Header route off*"),
    "mirror-on": (None, MIRROR_ON, lambda v: current_mirror(v, SERVICE, "production") == 50,
                  "(was nothing)", "mirror none → 50% to canary", "*Mirror*"),
    "mirror-off": (MIRROR_ON, MIRROR_OFF,
                   lambda v: current_mirror(v, SERVICE, "production") is None,
                   "Mirroring off", "mirror 50% → none", "*Mirror off*"),
}


def lose_the_writes_answer(mesh: EmulatedMesh, monkeypatch: pytest.MonkeyPatch) -> None:
    """The edit's write lands, and its answer is a 503: the job cannot know it landed."""
    mesh.cluster.lose_answer(503, method="PATCH", plural="virtualservices", name=SERVICE)


FAULTS = {"report refused": fail_the_report, "write's answer lost": lose_the_writes_answer}
# Retries each fault costs: a lost answer is read back at once, and the write found landed.
RETRIES = {"report refused": 1, "write's answer lost": 0}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_route_edit_retried_after_its_write_landed_says_what_it_did(
        emulated_mesh: EmulatedMesh, monkeypatch: pytest.MonkeyPatch, case: str,
        fault: str) -> None:
    mesh = emulated_mesh
    first, edit, landed, report, detail, word = CASES[case]
    if first is not None:
        run(mesh, first)
    FAULTS[fault](mesh, monkeypatch)
    request, retried = run(mesh, edit)

    assert landed(vs(mesh))
    assert retried == RETRIES[fault]
    mine = entries(mesh, request)
    assert [(e.outcome, e.detail) for e in mine] == [("done", detail)], mine
    said = thread(mesh, word)
    reports = [t for t in said if t.startswith(":white_check_mark:")]
    assert len(reports) == 1 and report in reports[0], said
    assert "replaces" not in reports[0], reports  # its own write is not what it replaced
    # What it wrote is named, though a retry (or a read-back) found nothing left to write.
    assert "already as asked" not in reports[0] and f"`{SERVICE}`" in reports[0], reports
    assert not any("nothing was changed" in t for t in told(mesh, request)), told(mesh, request)
