"""A gated canary end to end: a signed slash command to `meshbot serve`, the approval request in
the channel, two approvers reacting over signed Events API callbacks, the worker, the weights."""

from __future__ import annotations

from typing import TypeVar

from jobs.adapters.approval_store import ApprovalStore
from jobs.domain.approval_rules import ApprovalState, PendingApproval
from playground.processes import ServeProcess
from playground.slack_client import reaction_event, send_event, send_slash_command
from tests.fixtures.live import eventually
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh

T = TypeVar("T")
A1, A2 = "U0APPROVER1", "U0APPROVER2"
SERVICE = "payment-service"


def react(mesh: Mesh, server: ServeProcess, user: str, ts: str, event_id: str,
          retry_num: int | None = None) -> None:
    event = reaction_event("reaction_added", user=user, reaction="white_check_mark",
                           channel=CHANNEL, ts=ts)
    reply = send_event(f"{server.url}/slack/events", mesh.signing_secret, event, event_id,
                       retry_num=retry_num)
    assert reply.status == 200


def approval(mesh: Mesh, ts: str) -> PendingApproval:
    pending = ApprovalStore(mesh.redis).get(CHANNEL, ts)
    assert pending is not None
    return pending


def test_two_approvers_react_and_the_canary_runs(mesh: Mesh, server: ServeProcess) -> None:
    response_url = mesh.slack.new_response_url(channel=CHANNEL, user=OPERATOR)
    reply = send_slash_command(f"{server.url}/slack/events", mesh.signing_secret,
                               text=f"canary {SERVICE} 30", user_id=OPERATOR,
                               channel_id=CHANNEL, response_url=response_url)
    assert reply.status == 200 and "Accepted" in reply.body
    mesh.run_jobs()
    request = mesh.slack.wait_for_message(CHANNEL, lambda m: "Approval needed" in m.text)
    assert "stable 100→70 / canary 0→30" in request.text and "Needs 2 approvals" in request.text
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}

    react(mesh, server, A1, request.ts, "Ev0FIRST")
    # Slack did not see our ack in time and delivers the same event again: counted once.
    react(mesh, server, A1, request.ts, "Ev0FIRST", retry_num=1)
    eventually(lambda: "Ev0FIRST" in approval(mesh, request.ts).seen_events, 10, "A1 counted",
               interval=0.02)
    mesh.run_jobs()
    assert approval(mesh, request.ts).approvals == (A1,)
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}

    react(mesh, server, A2, request.ts, "Ev0SECOND")
    eventually(lambda: approval(mesh, request.ts).state is ApprovalState.APPROVED, 10, "quorum",
               interval=0.02)
    mesh.run_jobs()

    assert mesh.weights(SERVICE) == {"stable": 70, "canary": 30}
    root = next(m for m in mesh.slack.roots(CHANNEL) if "*Canary*" in m.text)
    thread = mesh.slack.thread(CHANNEL, root.ts)
    assert "stable 70 / canary 30" in thread[1].text
    assert f"Approved by <@{A1}> and <@{A2}>" in thread[-1].text
    final = mesh.slack.message(CHANNEL, request.ts)
    assert f"Approved by <@{A1}> and <@{A2}>; done." in final.text
