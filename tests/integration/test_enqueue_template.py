"""A request's job, enqueued from the recorded template, is the job RQ itself would enqueue:
the same keys, the same hash (but the per-job stamps and the shorter description), the same
data once decompressed, and a real RQ worker runs it."""

from __future__ import annotations

import time
import zlib

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs.runtime import api
from jobs.runtime.enqueue_template import EnqueueTemplate, TemplateError
from meshbot.commands import Command, Request, Verb

REPLAY_ONLY = api._REPLAY + "replay(ARGV[1]) return 1"


def canary(request_id: str) -> Request:
    return Request(id=request_id, command=Command(verb=Verb.CANARY, target="payment-service",
                                                  percent=10),
                   user="U0OPERATOR1", channel="C0MESHOPS", received_at=time.time())


def test_the_template_writes_what_rq_writes(redis_client: redis.Redis) -> None:
    request = canary("trigger.template.1")
    argument = request.model_dump(mode="json")
    replay = redis_client.register_script(REPLAY_ONLY)
    replay(keys=[], args=[api._job_writes(redis_client, "tpl", api.TASK, (argument,), "by-rq",
                                          timeout=api.REQUEST_TIMEOUT_S)])
    replay(keys=[], args=[api._request_template(redis_client, "tpl").writes(
        "by-template", argument, f"request {request.id}")])

    rq_hash = redis_client.hgetall("rq:job:by-rq")
    ours = redis_client.hgetall("rq:job:by-template")
    assert sorted(ours) == sorted(rq_hash)
    differing = {field for field in rq_hash if rq_hash[field] != ours[field]}
    assert differing <= {b"created_at", b"enqueued_at", b"description", b"data"}
    # The same job data; compressed with a smaller window, which RQ's decompress reads as well.
    assert zlib.decompress(ours[b"data"]) == zlib.decompress(rq_hash[b"data"])
    assert redis_client.lrange("rq:queue:tpl", 0, -1) == [b"by-rq", b"by-template"]

    job = Job.fetch("by-template", connection=redis_client, serializer=JSONSerializer)
    by_rq = Job.fetch("by-rq", connection=redis_client, serializer=JSONSerializer)
    for attribute in ("func_name", "args", "kwargs", "timeout", "retries_left",
                      "retry_intervals", "result_ttl", "failure_ttl", "origin"):
        assert getattr(job, attribute) == getattr(by_rq, attribute), attribute
    assert job.get_status() is JobStatus.QUEUED
    assert job.description == "request trigger.template.1"
    assert abs((job.enqueued_at - by_rq.enqueued_at).total_seconds()) < 60  # type: ignore[operator]


def test_a_submitted_request_runs_on_a_real_worker(redis_client: redis.Redis) -> None:
    # Any function RQ can import stands in for the task: what counts is that the worker finds
    # the job, decodes its argument and ends it as RQ's own jobs end.
    template = EnqueueTemplate(redis_client, "builtins.len", lambda pipe, job, argument: Queue(
        "tpl-run", connection=redis_client, serializer=JSONSerializer).enqueue_call(
            "builtins.len", args=(argument,), job_id=job, result_ttl=60, pipeline=pipe))
    redis_client.register_script(REPLAY_ONLY)(
        keys=[], args=[template.writes("run-1", {"a": 1, "b": 2, "c": 3}, "three keys")])

    queue = Queue("tpl-run", connection=redis_client, serializer=JSONSerializer)
    SimpleWorker([queue], connection=redis_client, serializer=JSONSerializer).work(burst=True)

    job = Job.fetch("run-1", connection=redis_client, serializer=JSONSerializer)
    assert job.get_status() is JobStatus.FINISHED
    assert job.return_value() == 3


def test_a_write_the_template_cannot_fill_is_refused(redis_client: redis.Redis) -> None:
    # An enqueue that puts the argument anywhere but the job's data (as a newer RQ might)
    # must not become a template that copies one request's argument into every job.
    def enqueue(pipe: redis.client.Pipeline, job: str, argument: object) -> None:
        Queue("tpl-bad", connection=redis_client, serializer=JSONSerializer).enqueue_call(
            "builtins.len", args=(argument,), job_id=job, pipeline=pipe)
        pipe.set(f"side:{job}", str(argument))

    with pytest.raises(TemplateError):
        EnqueueTemplate(redis_client, "builtins.len", enqueue)
