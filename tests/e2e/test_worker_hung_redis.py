"""Redis hung under an idle ``meshbot worker`` (its process SIGSTOPped: connections stay open,
nothing answers). RQ's own loop, which waits on the queues with a blocking pop, notices within
12 s (``WORKER_TTL_S``: a 1 s pop, an 11 s socket timeout) instead of RQ's ~415 s, says so in a
warning line without traceback, and once Redis answers again (SIGCONT) the same process runs
the next job at once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs.runtime.worker import WORKER_TTL_S
from playground.processes import MeshbotProcess
from playground.redis_server import RedisServer, free_port
from tests.fixtures.live import eventually
from tests.fixtures.redis_server import Hang
from tests.fixtures.slack import SlackEnv

# What meshbot promises: RQ's blocking pop (worker_ttl - 15) and its connection's socket
# timeout (that + 10), with meshbot's worker_ttl; RQ's default (420 s) would be 810 s.
NOTICE_S = 12.0


def rq_redis_lines(worker: MeshbotProcess) -> list[dict[str, object]]:
    """What RQ's worker loop logged about Redis, as JSON log records."""
    records = []
    for line in worker.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("logger") == "rq.worker" and "Redis" in str(record.get("msg")):
            records.append(record)
    return records


def run(queue: Queue, timeout: float, what: str) -> None:
    job = queue.enqueue("builtins.len", "meshbot")
    eventually(lambda: Job.fetch(job.id, connection=queue.connection,
                                 serializer=JSONSerializer).get_status() == JobStatus.FINISHED,
               timeout, what)


def test_a_hung_redis_is_noticed_in_seconds_and_the_worker_goes_on_once_it_answers(
        own_redis: RedisServer, slack_env: SlackEnv, policy_path: Path,
        tmp_path: Path) -> None:
    env = {"SLACK_API_URL": slack_env.api_url, "SLACK_BOT_TOKEN": slack_env.bot_token,
           "SLACK_SIGNING_SECRET": slack_env.signing_secret, "REDIS_URL": own_redis.url,
           "MESHBOT_POLICY": str(policy_path), "KUBECONFIG": str(tmp_path / "none"),
           "PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}"}
    client = redis.Redis.from_url(own_redis.url, socket_timeout=5)
    queue = Queue("meshbot", connection=client, serializer=JSONSerializer)
    assert (WORKER_TTL_S - 15) + (WORKER_TTL_S - 5) <= NOTICE_S
    with MeshbotProcess(["worker"], env, tmp_path / "worker.log") as worker:
        run(queue, 20, "the worker runs a job")
        assert rq_redis_lines(worker) == []
        hung_at = time.monotonic()
        with Hang(own_redis.url):
            # Waited on the worker's log, which SIGSTOP does not touch.
            [noticed, *_] = eventually(lambda: rq_redis_lines(worker), NOTICE_S + 3,
                                       "RQ's loop notices that Redis does not answer")
            noticed_after = time.monotonic() - hung_at
        assert noticed["level"] == "warning" and "Timeout" in str(noticed["msg"]), noticed
        client.close()  # its pooled connection may have been cut while Redis was stopped
        run(queue, 10, "the same worker runs the next job once Redis answers")
        log = worker.log()
    assert "Traceback" not in log
    print(f"noticed {noticed_after:.1f}s after Redis hung")
