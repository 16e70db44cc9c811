"""Approval requests and the reactions that answer them, through the bot's listener functions,
a real RQ worker, Redis, the real kube-apiserver (meshbot under the chart's RBAC) and the Slack
stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from jobs.adapters.audit import AuditLog
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh
from tests.integration.chatops import APPROVERS, ONCALL, ChatOps, write_policy

A1, A2, A3 = APPROVERS
SERVICE = "payment-service"


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    return write_policy(tmp_path)


@pytest.fixture
def ops(mesh: Mesh) -> Iterator[ChatOps]:
    yield ChatOps.start(mesh)


def request_canary_30(ops: ChatOps, user: str = OPERATOR) -> tuple[str, str]:
    """`/mesh canary payment-service 30` (critical: above 25 needs 2); the approval's ts."""
    ack, url = ops.command(f"canary {SERVICE} 30", user=user)
    assert "Accepted" in ack
    ops.run()
    return ops.approval().ts, url


def test_the_request_says_what_who_and_until_when(ops: ChatOps, mesh: Mesh) -> None:
    ts, _ = request_canary_30(ops)
    text = ops.approval().text
    assert f"`/mesh canary {SERVICE} 30` requested by <@{OPERATOR}>" in text
    assert "stable 100→70 / canary 0→30" in text
    assert "Needs 2 approvals from" in text
    assert all(f"<@{a}>" in text for a in APPROVERS) and "<!subteam^S0ONCALL>" in text
    assert ":white_check_mark:" in text and ":x:" in text and "Expires <!date^" in text
    assert "(30m after the request)" in text
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    entry = AuditLog(mesh.redis).last(SERVICE, 1)[0]
    assert entry.outcome == "approval requested" and entry.actor == OPERATOR
    assert entry.permalink and ts.replace(".", "") in entry.permalink


def test_quorum_of_distinct_approvers_runs_the_change_once(ops: ChatOps, mesh: Mesh) -> None:
    ts, _ = request_canary_30(ops)
    assert ops.react(A1, ts) == "counted"
    assert ops.react(A1, ts) == "no_change"  # the same person again counts once
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert f"Approvals so far: 1 of 2 — <@{A1}>" in ops.approval().text

    assert ops.react(A2, ts) == "quorum"
    assert ops.react(A3, ts) == "closed"  # a third after the quorum enqueues nothing more
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 70, "canary": 30}
    assert f"Approved by <@{A1}> and <@{A2}>; done." in ops.approval().text
    work = next(m for m in mesh.slack.roots(CHANNEL) if "*Canary*" in m.text)
    assert f"Approved by <@{A1}> and <@{A2}>" in ops.thread(work.ts)[-1]
    assert "Rollout thread: <https://" in ops.approval().text  # linked once it exists
    done = next(e for e in AuditLog(mesh.redis).last(SERVICE, 20) if e.outcome == "done")
    assert done.approvers == (A1, A2)
    assert done.before == "stable 100 / canary 0" and done.after == "stable 70 / canary 30"
    assert ops.queued() == 0


def test_the_requesters_own_reaction_and_strangers_are_ignored(ops: ChatOps,
                                                               mesh: Mesh) -> None:
    # U0APPROVER1 is also an operator here: asking does not let them approve their own request.
    ts, _ = request_canary_30(ops, user=A1)
    assert ops.react(A1, ts) == "requester"
    assert ops.react("U0STRANGER", ts) == "not_approver"
    assert ops.react(A2, ts) == "counted"
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert "Approvals so far: 1 of 2" in ops.approval().text
    ignored = [e for e in AuditLog(mesh.redis).last(SERVICE, 20) if e.outcome == "ignored"]
    assert {e.actor for e in ignored} == {A1, "U0STRANGER"}
    assert any("not an approver" in e.detail for e in ignored)


def test_an_approvers_reject_cancels(ops: ChatOps, mesh: Mesh) -> None:
    ts, url = request_canary_30(ops)
    ops.react(A1, ts)
    assert ops.react(A2, ts, "x") == "rejected"
    assert ops.react(A3, ts) == "closed"
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert f"Rejected by <@{A2}>" in ops.approval().text
    assert any(f"Rejected by <@{A2}>" in t for t in ops.thread(ts)[1:])
    assert any("Rejected" in t for t in ops.told(url))


def test_removing_the_reaction_withdraws(ops: ChatOps, mesh: Mesh) -> None:
    ts, _ = request_canary_30(ops)
    ops.react(A1, ts)
    assert ops.react(A1, ts, added=False) == "withdrawn"
    assert ops.react(A2, ts) == "counted"  # one of two again, not the quorum
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert f"Approvals so far: 1 of 2 — <@{A2}>." in ops.approval().text


def test_a_redelivered_event_is_counted_once(ops: ChatOps, mesh: Mesh) -> None:
    ts, _ = request_canary_30(ops)
    assert ops.react(A1, ts, event_id="Ev0RETRIED") == "counted"
    assert ops.react(A1, ts, added=False) == "withdrawn"
    assert ops.react(A1, ts, event_id="Ev0RETRIED") == "duplicate"
    assert ops.react(A2, ts) == "counted"
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}


def test_requests_expire_and_late_reactions_do_nothing(ops: ChatOps, mesh: Mesh) -> None:
    ts, url = request_canary_30(ops)
    queue = Queue("meshbot", connection=mesh.redis, serializer=JSONSerializer)
    registry = ScheduledJobRegistry(queue=queue)
    [job_id] = registry.get_job_ids()
    scheduled = registry.get_scheduled_time(job_id).timestamp()
    assert abs(scheduled - (float(ts) + 1800)) < 60
    # What RQ's scheduler does when the time comes: move the job to its queue.
    registry.remove(job_id)
    queue.enqueue_job(Job.fetch(job_id, connection=mesh.redis, serializer=JSONSerializer))
    ops.run()
    assert "Expired: 0 of 2 approvals within 30m" in ops.approval().text
    assert any("Expired" in t for t in ops.told(url))
    assert ops.react(A1, ts) == "closed" and ops.react(A2, ts) == "closed"
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert any(e.outcome == "expired" for e in AuditLog(mesh.redis).last(SERVICE, 10))


def test_a_changed_service_voids_the_approved_request(ops: ChatOps, mesh: Mesh) -> None:
    ts, url = request_canary_30(ops)
    ops.command(f"canary {SERVICE} 10", user="U0OPERATOR2")  # no approval needed at 10
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    ops.react(A1, ts)
    ops.react(A2, ts)
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}  # not 70/30
    text = ops.approval().text
    assert "Voided" in text and "was stable 100 / canary 0, now stable 90 / canary 10" in text
    assert any("Voided" in t for t in ops.told(url))


def test_a_reaction_on_any_other_message_is_ignored(ops: ChatOps, mesh: Mesh) -> None:
    chatter = mesh.slack.post(CHANNEL, "lunch?", user="U0SOMEONE")
    assert ops.react(A1, chatter.ts) == "not_a_request"
    ops.command(f"canary {SERVICE} 10")
    ops.run()
    work = mesh.slack.roots(CHANNEL)[-1]
    assert ops.react(A1, work.ts) == "not_a_request"  # a thread root, not a request
    assert ops.queued() == 0
    assert not [e for e in AuditLog(mesh.redis).last(None, 50) if e.actor == A1]


def test_user_group_members_approve_via_slack(ops: ChatOps, mesh: Mesh) -> None:
    ts, _ = request_canary_30(ops)
    assert ops.react("U0OUTSIDER", ts) == "not_approver"
    assert ops.react(ONCALL, ts) == "counted"
    assert ops.react(A3, ts) == "quorum"
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 70, "canary": 30}
    assert f"Approved by <@{ONCALL}> and <@{A3}>" in ops.approval().text
    lookups = mesh.slack.calls("usergroups.users.list")
    assert lookups and all(c.params.get("usergroup") == "S0ONCALL" for c in lookups)
