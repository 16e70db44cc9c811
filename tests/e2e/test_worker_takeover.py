"""A dead worker's work is taken over in seconds, not in RQ's minutes: a job killed mid-run is
run again by another worker, and a job its worker dequeued but never started goes back on its
queue. Real ``meshbot worker`` processes on a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs.runtime.takeover import ALIVE_PREFIX, LEASE_S, STUCK_S, take_over
from playground.processes import MeshbotProcess
from playground.redis_server import free_port
from tests.fixtures.live import eventually
from tests.fixtures.slack import SlackEnv

TAKEOVER_DEADLINE_S = LEASE_S + 15  # the lease lapses, then a tick or two of the survivor


@pytest.fixture
def worker_env(slack_env: SlackEnv, policy_path: Path, redis_url: str,
               tmp_path: Path) -> dict[str, str]:
    return {"SLACK_API_URL": slack_env.api_url, "SLACK_BOT_TOKEN": slack_env.bot_token,
            "SLACK_SIGNING_SECRET": slack_env.signing_secret, "REDIS_URL": redis_url,
            "MESHBOT_POLICY": str(policy_path), "KUBECONFIG": str(tmp_path / "none"),
            "PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}"}


@pytest.fixture
def queue(redis_client: redis.Redis) -> Iterator[Queue]:
    yield Queue("meshbot", connection=redis_client, serializer=JSONSerializer)


def status(job: Job) -> JobStatus | None:
    return job.get_status(refresh=True)


def test_a_job_whose_worker_was_killed_mid_run_is_run_again(
        worker_env: dict[str, str], queue: Queue, redis_client: redis.Redis,
        tmp_path: Path) -> None:
    job = queue.enqueue("time.sleep", 2, job_timeout=120)
    first = MeshbotProcess(["worker"], worker_env, tmp_path / "worker-1.log").start()
    try:
        eventually(lambda: status(job) == JobStatus.STARTED, 30, "the first worker started it")
        first.kill()
    finally:
        first.stop()
    assert status(job) == JobStatus.STARTED  # RQ alone would leave it so for minutes
    with MeshbotProcess(["worker"], worker_env, tmp_path / "worker-2.log"):
        eventually(lambda: status(job) == JobStatus.FINISHED, TAKEOVER_DEADLINE_S + 5,
                   "the second worker took it over and finished it")
    assert not redis_client.keys(ALIVE_PREFIX + "*")  # the survivor stopped cleanly


def test_a_job_dequeued_by_a_worker_that_died_goes_back_on_its_queue(
        queue: Queue, redis_client: redis.Redis) -> None:
    job = queue.enqueue("builtins.len", "x")
    # What a worker killed right after its BLMOVE leaves: the job in the intermediate list.
    intermediate = IntermediateQueue(queue.key, redis_client)
    redis_client.lmove(queue.key, intermediate.key, "RIGHT", "LEFT")
    assert queue.job_ids == [] and intermediate.get_job_ids() == [job.id]
    t0 = 1_000_000.0
    assert take_over(redis_client, ["meshbot"], now=t0) == []  # first seen: may be starting
    assert take_over(redis_client, ["meshbot"], now=t0 + STUCK_S / 2) == []
    assert take_over(redis_client, ["meshbot"], now=t0 + STUCK_S + 0.1) == [job.id]
    assert queue.job_ids == [job.id] and intermediate.get_job_ids() == []
