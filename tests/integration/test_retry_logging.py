"""A designed retry (a job failing with a ``TemporaryError``) is one log line, not a traceback;
a job that fails with anything else keeps RQ's traceback, so real bugs still stand out."""

from __future__ import annotations

import logging
import time

import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from jobs.runtime import api
from meshbot.commands import Command, Request, Verb
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if "Traceback (most recent call last)" in r.getMessage() or r.exc_info]


def test_a_designed_retry_logs_one_line_without_traceback(
        mesh: Mesh, caplog: pytest.LogCaptureFixture) -> None:
    request = Request(id=f"locks-{time.time_ns()}", command=Command(verb=Verb.LOCKS),
                      user=OPERATOR, channel=CHANNEL, received_at=time.time())
    assert api.submit(mesh.redis, request)
    # Longer than the notifier waits inline, twice: the job fails with SlackRateLimited.
    mesh.slack.rate_limit("chat.postMessage", times=2, retry_after=10)
    with caplog.at_level(logging.INFO):
        mesh.run_jobs()
    scheduled = Queue("meshbot", connection=mesh.redis,
                      serializer=JSONSerializer).scheduled_job_registry
    assert scheduled.get_job_ids() == [api.job_id(request.id)]  # it was a retry, as designed
    assert _tracebacks(caplog) == []
    names = (request.id, api.job_id(request.id))
    about = [r for r in caplog.records
             if r.levelno >= logging.WARNING and any(n in r.getMessage() for n in names)]
    assert len(about) == 1, [r.getMessage() for r in about]
    assert "retry" in about[0].getMessage()


def test_a_job_failing_with_a_bug_keeps_its_traceback(
        mesh: Mesh, caplog: pytest.LogCaptureFixture) -> None:
    Queue("meshbot", connection=mesh.redis, serializer=JSONSerializer).enqueue(
        "json.loads", "{not json")
    with caplog.at_level(logging.INFO):
        mesh.run_jobs()
    [logged] = _tracebacks(caplog)
    assert "JSONDecodeError" in logged
