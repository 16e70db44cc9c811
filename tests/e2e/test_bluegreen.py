"""`/mesh bluegreen` to the end from one command, against the real stack: the bot under
gunicorn, a worker with its ticker, the real kube-apiserver, and a real Prometheus scraping the
mesh's traffic generator (which splits by the live weights). A healthy green is cut over once
two approvers react on the request meshbot posts in the rollout's thread; a breach goes back;
an abort while approvers are asked closes the request, its approvals not used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.adapters.approval_store import ApprovalStore
from jobs.adapters.audit import AuditEntry, AuditLog
from jobs.domain.approval_rules import ApprovalState, PendingApproval
from jobs.domain.rollout import Phase
from playground.processes import ServeProcess
from playground.slack_client import reaction_event, send_event
from playground.slack_model import Message
from tests.e2e.test_analysis import in_phase, slash
from tests.fixtures.live import Live, eventually
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh

SVC = "payment-service"  # critical: the cutover needs two approvals
A1, A2 = "U0APPROVER1", "U0APPROVER2"


@pytest.fixture
def policy_path(analysis_policy: Path, tmp_path: Path) -> Path:
    data = yaml.safe_load(analysis_policy.read_text())
    data["permissions"]["bluegreen"] = ["operators"]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def http(mesh: Mesh) -> list[dict[str, Any]]:
    vs = mesh.cluster.get("networking.istio.io", "v1beta1", "virtualservices", "production",
                          SVC)
    return list(vs["spec"]["http"])


def has_preview(mesh: Mesh) -> bool:
    return any(r.get("match") == [{"headers": {"canary": {"exact": "true"}}}]
               for r in http(mesh))


def root(mesh: Mesh) -> Message:
    return eventually(lambda: next((m for m in mesh.slack.roots(CHANNEL)
                                    if "*Blue-green*" in m.text), None), 20,
                      "the blue-green's thread is opened")


def thread(mesh: Mesh) -> list[Message]:
    return mesh.slack.thread(CHANNEL, root(mesh).ts)


def started(live: Live, server: ServeProcess) -> None:
    """The command, then its preview route and 90/10 in the API server."""
    mesh = live.mesh
    slash(mesh, server, f"bluegreen {SVC}")
    eventually(lambda: mesh.weights(SVC) == {"stable": 90, "canary": 10}, 20,
               "the 90/10 step is written")
    assert has_preview(mesh)
    assert http(mesh)[0]["route"] == [{"destination": {"host": SVC, "subset": "canary"}}]


def cutover_request(live: Live) -> PendingApproval:
    """The approval request meshbot posts into the thread once the analysis is ready."""
    mesh = live.mesh
    message = eventually(lambda: next((m for m in thread(mesh)
                                       if "Approval needed" in m.text), None), 40,
                         "the cutover's approval request appears in the rollout's thread")
    assert message.thread_ts == root(mesh).ts  # a reply in the thread, not a new root
    assert not any("Approval needed" in m.text for m in mesh.slack.roots(CHANNEL))
    # The request is stored just after it is posted; people cannot react faster than that.
    pending = eventually(lambda: ApprovalStore(mesh.redis).get(CHANNEL, message.ts), 10,
                         "the approval request is registered")
    assert pending.required == 2 and pending.request.user == OPERATOR
    assert in_phase(live, SVC, Phase.AWAITING_APPROVAL)  # still watched meanwhile
    return pending


def thread_showing(mesh: Mesh, needle: str) -> str | None:
    text = "\n".join(m.text for m in thread(mesh))
    return text if needle in text else None


def in_state(mesh: Mesh, ts: str, state: ApprovalState) -> PendingApproval | None:
    pending = ApprovalStore(mesh.redis).get(CHANNEL, ts)
    return pending if pending is not None and pending.state is state else None


def preview_removal_audited(mesh: Mesh, pending: PendingApproval) -> list[AuditEntry] | None:
    entries = AuditLog(mesh.redis).last(SVC, 30)
    removed = any(e.request_id == pending.request.id and e.outcome == "done"
                  and "preview header route removed" in e.detail for e in entries)
    return entries if removed else None


def react(mesh: Mesh, server: ServeProcess, user: str, ts: str, event_id: str) -> None:
    event = reaction_event("reaction_added", user=user, reaction="white_check_mark",
                           channel=CHANNEL, ts=ts)
    assert send_event(f"{server.url}/slack/events", mesh.signing_secret, event,
                      event_id).status == 200


def test_a_healthy_green_is_cut_over_after_two_approvals_in_its_thread(
        live: Live, server: ServeProcess) -> None:
    mesh = live.mesh
    started(live, server)
    pending = cutover_request(live)
    assert mesh.weights(SVC) == {"stable": 90, "canary": 10}  # nothing before the approvals
    react(mesh, server, A1, pending.ts, "Ev0BG1")
    react(mesh, server, A2, pending.ts, "Ev0BG2")

    eventually(lambda: mesh.weights(SVC) == {"stable": 0, "canary": 100}, 30,
               "two approvals cut all traffic over to the other subset")
    eventually(lambda: not has_preview(mesh), 20, "the preview route is removed")
    assert len(http(mesh)) == 1
    assert in_phase(live, SVC, Phase.PROMOTED)
    texts = eventually(lambda: thread_showing(mesh, "Blue-green done"), 20,
                       "the thread says it is done")
    assert "passed its analysis" in texts and f"<@{A1}>" in texts
    # The preview route's removal is audited just after its write lands: the mesh shows it
    # first.
    entries = eventually(lambda: preview_removal_audited(mesh, pending), 20,
                         "the preview route's removal is audited")
    outcomes = {(e.actor, e.outcome) for e in entries if e.action == "bluegreen"}
    assert {(OPERATOR, "approval requested"), (A1, "approval"), (A2, "approved"),
            (OPERATOR, "done")} <= outcomes
    done = [e for e in entries if e.request_id == pending.request.id and e.outcome == "done"]
    assert any(e.after == "stable 0 / canary 100" and set(e.approvers) == {A1, A2}
               for e in done)
    assert ApprovalStore(mesh.redis).get(CHANNEL, pending.ts).state is ApprovalState.DONE


def test_a_breach_during_90_10_goes_back_and_asks_nobody(live: Live,
                                                         server: ServeProcess) -> None:
    mesh = live.mesh
    live.traffic.set_profile(SVC, subset="canary", error_rate=0.3)
    started(live, server)
    eventually(lambda: in_phase(live, SVC, Phase.ROLLED_BACK), 40,
               "the analysis rolls the breaching green back")
    eventually(lambda: mesh.weights(SVC) == {"stable": 100, "canary": 0}, 20,
               "all traffic is back on the stable subset")
    eventually(lambda: not has_preview(mesh), 20, "the preview route is removed")
    texts = "\n".join(m.text for m in mesh.slack.messages(CHANNEL))
    assert "Automatic rollback" in texts
    assert "Approval needed" not in texts
    assert ApprovalStore(mesh.redis).for_request(f"{live.rollout(SVC).id}-cutover") is None


def test_an_abort_while_approvers_are_asked_closes_the_request_unused(
        live: Live, server: ServeProcess) -> None:
    mesh = live.mesh
    started(live, server)
    pending = cutover_request(live)
    react(mesh, server, A1, pending.ts, "Ev0BGA1")
    eventually(lambda: ApprovalStore(mesh.redis).get(CHANNEL, pending.ts).approvals == (A1,),
               10, "the first approval is counted")
    slash(mesh, server, f"abort {SVC}")

    closed = eventually(lambda: in_state(mesh, pending.ts, ApprovalState.VOIDED), 20,
                        "the abort closes the cutover request")
    assert "were not used" in closed.detail and f"`/mesh abort` by <@{OPERATOR}>" in closed.detail
    eventually(lambda: mesh.weights(SVC) == {"stable": 100, "canary": 0}, 20,
               "the abort sends all traffic back")
    assert not has_preview(mesh)
    eventually(lambda: "Cutover not run" in mesh.slack.message(CHANNEL, pending.ts).text, 20,
               "the request message says it was not used")
    react(mesh, server, A2, pending.ts, "Ev0BGA2")  # too late: the request is closed
    entries = AuditLog(mesh.redis).last(SVC, 30)
    assert any(e.outcome == "not used" and e.request_id == pending.request.id for e in entries)
    eventually(lambda: any(e.actor == A2 and e.detail == "the request is closed"
                           for e in AuditLog(mesh.redis).last(SVC, 30)), 10,
               "a late approval is audited as ignored")
    assert mesh.weights(SVC) == {"stable": 100, "canary": 0}
    assert in_phase(live, SVC, Phase.ROLLED_BACK)
