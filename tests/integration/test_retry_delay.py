"""A temporary failure is retried when its cause says: Slack's ``Retry-After`` is honoured by the
job's retry (it was retried after RQ's fixed 1 s), the fixed schedule being the floor."""

from __future__ import annotations

import time

from rq import Queue
from rq.serializers import JSONSerializer

from jobs.runtime import api
from meshbot.commands import Command, Request, Verb
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh


def test_slack_retry_after_sets_when_the_job_is_retried(mesh: Mesh) -> None:
    request = Request(id=f"locks-{time.time_ns()}", command=Command(verb=Verb.LOCKS),
                      user=OPERATOR, channel=CHANNEL, received_at=time.time())
    assert api.submit(mesh.redis, request)
    # More than the notifier waits inline, twice (its own one retry): the job must give way.
    mesh.slack.rate_limit("chat.postMessage", times=2, retry_after=10)
    started = time.time()
    mesh.run_jobs()
    scheduled = Queue("meshbot", connection=mesh.redis, serializer=JSONSerializer) \
        .scheduled_job_registry
    [job_id] = scheduled.get_job_ids()
    assert job_id == api.job_id(request.id)
    due = mesh.redis.zscore(scheduled.key, job_id)  # when RQ will release it
    assert due is not None
    assert due - started >= 10 - 1  # Slack's Retry-After, not the schedule's 1 s
