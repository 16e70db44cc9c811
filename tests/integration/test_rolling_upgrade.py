"""A request written by a newer meshbot — while serve is upgraded before the workers — meets an
older worker that cannot read all of it: a verb it does not know, or a field it has no idea of.
The worker must not run it (a field it cannot see may change what the command means) and must
not drop it in silence (the caller was already told "working on it"): the caller is told
nothing was done, and the mesh is as it was."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from bot.assembly import build_wsgi
from jobs.adapters.approval_store import ApprovalStore
from jobs.adapters.keys import Keys
from jobs.domain.approval_rules import ApprovalState, PendingApproval
from jobs.runtime import api, context
from jobs.runtime.handlers.approvals import REQUEST_TASK, sweep
from meshbot.commands import Command, Request, Verb
from meshbot.settings import Settings
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh
from tests.integration import test_reaction_outage as outage


def newer_request(mesh: Mesh, request_id: str, *, verb: str = "canary",
                  extra: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """The payload a newer serve enqueued: this version's request, plus what it adds."""
    response_url = mesh.slack.new_response_url(channel=CHANNEL, user=OPERATOR)
    request = Request(id=request_id, command=Command(verb=Verb.CANARY, target="payment-service",
                                                     percent=10),
                      user=OPERATOR, channel=CHANNEL, response_url=response_url)
    payload = request.model_dump(mode="json")
    payload["command"]["verb"] = verb
    payload.update(extra or {})
    return payload, response_url


def enqueue_as_newer_meshbot(mesh: Mesh, task: str, payload: dict[str, Any]) -> str:
    job_id = api.job_id(str(payload["id"]))
    Queue("meshbot", connection=mesh.redis, serializer=JSONSerializer).enqueue_call(
        task, args=(payload,), job_id=job_id, retry=api.RETRY)
    return job_id


CASES = {
    "a field it does not know": dict(extra={"canary_ramp": "linear"}),
    "a verb it does not know": dict(verb="shadow"),
}
# The command's own job, and the job that posts an approval request when Slack did not take it
# at once.
TASKS = {"command": api.TASK, "approval request": REQUEST_TASK}


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("case", list(CASES))
def test_a_request_from_a_newer_meshbot_is_not_run_and_its_caller_is_told(
        mesh: Mesh, case: str, task: str) -> None:
    payload, response_url = newer_request(mesh, f"T-upgrade-{case.split()[1]}", **CASES[case])
    job_id = enqueue_as_newer_meshbot(mesh, TASKS[task], payload)

    mesh.run_jobs()

    said = [r.text for r in mesh.slack.responses(response_url.rsplit("/", 1)[1])]
    assert len(said) == 1, said
    assert "was not run" in said[0] and "Nothing was done" in said[0]
    assert f"`/mesh {payload['command']['verb']} payment-service`" in said[0]
    # Not run, and not left to RQ's retries (which would end in a silent failure).
    assert mesh.weights("payment-service") == {"stable": 100, "canary": 0}
    assert mesh.slack.roots(CHANNEL) == []
    job = Job.fetch(job_id, connection=mesh.redis, serializer=JSONSerializer)
    assert job.get_status() is JobStatus.FINISHED


# --- approvals a newer meshbot stored --------------------------------------------------------


def pending(ts: str, *, expires_at: float, state: ApprovalState = ApprovalState.OPEN,
            service: str = "payment-service") -> PendingApproval:
    now = time.time()
    request = Request(id=f"T-approval-{ts}", command=Command(verb=Verb.PROMOTE, target=service),
                      user=OPERATOR, channel=CHANNEL, received_at=now)
    return PendingApproval(channel=CHANNEL, ts=ts, request=request, plan="canary → 100",
                           precondition={}, required=2, eligible=("U0APPROVER1", "U0APPROVER2"),
                           created_at=now, expires_at=expires_at, state=state,
                           approvals=("U0APPROVER1", "U0APPROVER2") if state is not
                           ApprovalState.OPEN else ())


def test_an_approval_a_newer_meshbot_stored_does_not_stop_the_sweep_for_the_others(
        mesh: Mesh, caplog: pytest.LogCaptureFixture) -> None:
    """The ticker's approval sweep (expiry, and approved work that waited for a lock) reads
    every open approval: one this version cannot read is left, untouched, for a meshbot that
    can, and said once in the log — the others expire and resume as ever."""
    now = time.time()
    store = ApprovalStore(mesh.redis)
    due = pending(mesh.slack.post(CHANNEL, "approve the promote?").ts, expires_at=now - 1)
    waited = pending(mesh.slack.post(CHANNEL, "approve the promote?").ts, expires_at=now + 600,
                     state=ApprovalState.WAITING, service="order-service")
    newer = pending(mesh.slack.post(CHANNEL, "approve the promote?").ts, expires_at=now - 1,
                    service="user-service")
    for each in (due, waited, newer):
        store.create(each)
    key = Keys().approval(CHANNEL, newer.ts)
    stored = json.loads(mesh.redis.get(key) or b"{}")
    stored["request"]["canary_ramp"] = "linear"  # a field of a newer meshbot's request
    mesh.redis.set(key, json.dumps(stored), keepttl=True)

    with caplog.at_level(logging.INFO):
        for _ in range(2):  # two ticks: said once
            sweep(context.current(), time.time())

    after_due, after_waited = store.get(CHANNEL, due.ts), store.get(CHANNEL, waited.ts)
    assert after_due is not None and after_due.state is ApprovalState.EXPIRED
    assert after_waited is not None and after_waited.state is ApprovalState.APPROVED
    assert after_waited.runs == 1  # its approved work was enqueued, once
    assert json.loads(mesh.redis.get(key) or b"{}") == stored  # left as the newer one wrote it
    said = [r for r in caplog.records if newer.ts in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, [r.getMessage() for r in said]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_a_vote_on_an_approval_a_newer_meshbot_stored_is_left_for_slack_to_deliver_again(
        mesh: Mesh, caplog: pytest.LogCaptureFixture) -> None:
    """Answered 503 (Slack delivers it again, perhaps to a serve that can read it) with one
    line in the log, never a traceback; the approval is left as it was."""
    ApprovalStore(mesh.redis).create(outage.pending_promote())
    key = Keys().approval(outage.CHANNEL, outage.TS)
    stored = json.loads(mesh.redis.get(key) or b"{}")
    stored["request"]["canary_ramp"] = "linear"
    mesh.redis.set(key, json.dumps(stored), keepttl=True)
    app = build_wsgi(Settings())
    caplog.clear()

    with caplog.at_level(logging.WARNING):
        status = outage.deliver(app, mesh.signing_secret)

    assert status == "503 Service Unavailable"
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(problems) == 1 and "reaction not counted, Slack will deliver it again" in \
        problems[0] and "cannot be read by this meshbot" in problems[0], problems
    assert all(r.exc_info is None for r in caplog.records)
    assert json.loads(mesh.redis.get(key) or b"{}") == stored
