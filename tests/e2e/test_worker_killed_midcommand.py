"""A worker SIGKILLed in the middle of a real ``/mesh`` command's job, while it holds the
service's lock and its weight write is on the wire (held by the Kubernetes emulator, so the job is
known to be mid-flight). A surviving ``meshbot worker`` takes the job over within seconds
(``jobs.runtime.takeover``): the job ends, said in its thread and its audit, the lock is freed,
and the next command on the same service is not answered "busy"."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs.adapters.audit import AuditLog
from jobs.adapters.locks import Locks
from jobs.runtime.takeover import ALIVE_PREFIX, LEASE_S
from playground.processes import MeshbotProcess, ServeProcess
from playground.redis_server import free_port
from playground.slack_client import send_slash_command
from tests.fixtures.live import eventually
from tests.fixtures.meshbot import CHANNEL, OPERATOR, EmulatedMesh

SERVICE = "payment-service"
# The killed worker's lease lapses, then a tick of the survivor's ticker and the job's re-run.
TAKEOVER_DEADLINE_S = LEASE_S + 10


@pytest.fixture
def worker_env(emulated_mesh: EmulatedMesh) -> dict[str, str]:
    return {**emulated_mesh.env, "PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
            "MESHBOT_TICK_PERIOD": "0.5"}


@pytest.fixture
def serve(emulated_mesh: EmulatedMesh, tmp_path: Path) -> Iterator[ServeProcess]:
    with ServeProcess(emulated_mesh.env, tmp_path / "serve.log") as process:
        yield process
    print(process.log())  # shown by pytest when the test failed


def slash(mesh: EmulatedMesh, server: ServeProcess, text: str) -> str:
    """The command as Slack sends it; what the caller was told privately, if anything."""
    response_url = mesh.slack.new_response_url(channel=CHANNEL, user=OPERATOR)
    reply = send_slash_command(f"{server.url}/slack/events", mesh.signing_secret, text=text,
                               user_id=OPERATOR, channel_id=CHANNEL, response_url=response_url)
    assert reply.status == 200, reply.body
    return str((reply.json() or {}).get("text", ""))


def said(mesh: EmulatedMesh) -> str:
    """Everything in the channel and every private answer to the caller."""
    posted = [m.text for m in mesh.slack.messages(CHANNEL)]
    private = [str(r.body.get("text", "")) for r in mesh.slack.responses()]
    return "\n".join(posted + private)


def started_job(mesh: EmulatedMesh) -> Job | None:
    queue = Queue("meshbot", connection=mesh.redis, serializer=JSONSerializer)
    ids = queue.started_job_registry.get_job_ids(cleanup=False)
    return Job.fetch(ids[0], connection=mesh.redis, serializer=JSONSerializer) if ids else None


def test_a_worker_killed_mid_command_is_taken_over_and_the_service_is_not_left_busy(
        emulated_mesh: EmulatedMesh, serve: ServeProcess, worker_env: dict[str, str],
        tmp_path: Path) -> None:
    mesh = emulated_mesh
    held = mesh.cluster.hold(method="PATCH", plural="virtualservices", name=SERVICE,
                             timeout=60)
    workers = [MeshbotProcess(["worker"], worker_env, tmp_path / f"worker-{n}.log").start()
               for n in (1, 2)]
    try:
        eventually(lambda: len(mesh.redis.keys(ALIVE_PREFIX + "*")) == 2, 20,
                   "both workers hold their lease")
        slash(mesh, serve, f"canary {SERVICE} 10")
        # The job's write is on the wire (meshbot's Kubernetes client waits 5 s for it).
        assert held.reached.wait(30), "the canary's weight write reached the API server"
        lock = Locks(mesh.redis).get(SERVICE)
        job = started_job(mesh)
        assert lock is not None and job is not None and job.worker_name
        rq_worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + job.worker_name,
                                       connection=mesh.redis)
        assert rq_worker is not None
        pid = rq_worker.pid
        [busy] = [w for w in workers if w.process is not None and w.process.pid == pid]

        busy.kill()  # SIGKILL, its write on the wire
        killed_at = time.monotonic()
        held.release()  # the API server answers the write nobody waits for any more
        assert Locks(mesh.redis).get(SERVICE) == lock  # RQ alone leaves it so for hours

        eventually(lambda: Locks(mesh.redis).get(SERVICE) is None, TAKEOVER_DEADLINE_S,
                   "the survivor took the job over and its end freed the service's lock")
        freed_after = time.monotonic() - killed_at
        assert job.get_status(refresh=True) == JobStatus.FINISHED
        assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
        # The thread says how it ended, and the audit has the request's outcome.
        eventually(lambda: "stable 90 / canary 10" in said(mesh), 10,
                   "the thread reports the applied split")
        entries = [e for e in AuditLog(mesh.redis).last(SERVICE, 20)
                   if e.request_id == lock.request_id]
        assert [e.outcome for e in entries if e.action == "canary"][:1] == ["done"], entries
        assert entries[0].after == "stable 90 / canary 10"

        # The next command on the same service runs; nobody is told "busy".
        slash(mesh, serve, f"canary {SERVICE} 20")
        eventually(lambda: mesh.weights(SERVICE) == {"stable": 80, "canary": 20}, 20,
                   "the next canary on the service is applied")
        assert "busy" not in said(mesh)
        print(f"lock freed {freed_after:.1f}s after the kill")
    finally:
        held.release()
        for worker in workers:
            worker.stop()
            print(worker.log()[-3000:])
