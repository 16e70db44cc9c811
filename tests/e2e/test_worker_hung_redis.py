"""Redis hung under a ``meshbot worker`` (its process SIGSTOPped: connections stay open, nothing
answers).

- Idle: RQ's own loop, which waits on the queues with a blocking pop, notices within 12 s
  (``WORKER_TTL_S``: a 1 s pop, an 11 s socket timeout) instead of RQ's ~415 s, says so in a
  warning line without traceback, and once Redis answers again (SIGCONT) the same process runs
  the next job at once.
- In the middle of a ``/mesh canary`` job: the job's own Redis client gives up in 5 s, RQ's
  bookkeeping of that failure in 11 s, and the worker ends; once Redis answers, a new worker in
  the same process takes the job over (the old one's lease is gone), finishes it and frees the
  service's lock, and the next command on the service is not answered "busy"."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs.adapters.locks import Locks
from jobs.runtime.worker import WORKER_TTL_S
from playground.processes import MeshbotProcess, ServeProcess
from playground.redis_server import RedisServer, free_port
from tests.e2e.test_worker_killed_midcommand import SERVICE, said, slash
from tests.fixtures.live import eventually
from tests.fixtures.meshbot import EmulatedMesh
from tests.fixtures.redis_server import Hang
from tests.fixtures.slack import SlackEnv

# What meshbot promises: RQ's blocking pop (worker_ttl - 15) and its connection's socket
# timeout (that + 10), with meshbot's worker_ttl; RQ's default (420 s) would be 810 s.
NOTICE_S = 12.0
# In a job: the job's own client gives up (5 s a call; this job meets it twice after its write),
# then RQ's bookkeeping of the failure on its connection (11 s) ends RQ's loop.
NOTICE_MID_JOB_S = 5 + 5 + (WORKER_TTL_S - 5)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """This test's own Redis (the suite's is shared by the session: not one to hang)."""
    with RedisServer(tmp_path / "own-redis") as server:
        yield server


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
        redis_server: RedisServer, slack_env: SlackEnv, policy_path: Path,
        tmp_path: Path) -> None:
    own_redis = redis_server
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


def test_redis_hung_in_the_middle_of_a_command_job_the_job_is_finished_once_it_answers(
        emulated_mesh: EmulatedMesh, redis_server: RedisServer, tmp_path: Path) -> None:
    mesh = emulated_mesh
    env = {**mesh.env, "PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
           "MESHBOT_TICK_PERIOD": "0.5"}
    held = mesh.cluster.hold(method="PATCH", plural="virtualservices", name=SERVICE,
                             timeout=30)
    with ServeProcess(mesh.env, tmp_path / "serve.log") as serve, \
            MeshbotProcess(["worker"], env, tmp_path / "worker.log") as worker:
        try:
            slash(mesh, serve, f"canary {SERVICE} 10")
            assert held.reached.wait(30), "the canary's weight write reached the API server"
            lock = Locks(mesh.redis).get(SERVICE)
            assert lock is not None
            hung_at = time.monotonic()
            with Hang(redis_server.url):
                held.release()  # the write lands; the job's next step finds Redis hung
                eventually(lambda: rq_redis_lines(worker), NOTICE_MID_JOB_S + 5,
                           "RQ's loop notices that Redis does not answer")
                noticed_after = time.monotonic() - hung_at
            mesh.redis.connection_pool.disconnect()  # the test's own client, idle meanwhile
            eventually(lambda: Locks(mesh.redis).get(SERVICE) is None, 20,
                       "a new worker took the job over and its end freed the lock")
            assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
            eventually(lambda: "stable 90 / canary 10" in said(mesh), 10,
                       "the thread reports the applied split")
            slash(mesh, serve, f"canary {SERVICE} 20")
            eventually(lambda: mesh.weights(SERVICE) == {"stable": 80, "canary": 20}, 20,
                       "the next canary on the service is applied")
            assert "busy" not in said(mesh)
            assert "Traceback" not in worker.log()
            print(f"RQ's loop noticed {noticed_after:.1f}s after Redis hung")
        finally:
            held.release()
            print(worker.log()[-4000:])
