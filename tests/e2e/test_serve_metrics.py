"""``/healthz``, ``/readyz`` and ``/metrics`` over HTTP, as the chart's probes and Prometheus see
them: a real ``meshbot serve`` (several gunicorn workers) and a real ``meshbot worker
--metrics-port``, with signed slash commands and a Redis that stops."""

from __future__ import annotations

import http.client
import json
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from rq import Worker

from playground.processes import MeshbotProcess, ServeProcess
from playground.redis_server import RedisServer, free_port
from playground.slack_client import send_slash_command
from tests.fixtures.live import eventually
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def wait_ok(port: int, path: str = "/healthz") -> None:
    """Like playground.processes.wait_http_ok, but closing every connection it opens (a reset
    one included: gunicorn drops connections while its workers boot)."""
    def answers() -> bool:
        try:
            return get(port, path)[0] == 200
        except OSError:
            return False
    eventually(answers, 30, f"{path} answered 200")


def sample(port: int, name: str, **labels: str) -> float | None:
    status, body = get(port, "/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def slash(mesh: Mesh, url: str, text: str, user: str = OPERATOR) -> str:
    reply = send_slash_command(f"{url}/slack/events", mesh.signing_secret, text=text,
                               user_id=user, channel_id=CHANNEL,
                               response_url=mesh.slack.new_response_url(channel=CHANNEL,
                                                                        user=user))
    assert reply.status == 200
    return reply.body


def gunicorn_workers(master: int) -> set[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}


@pytest.fixture
def serve3(mesh: Mesh, tmp_path: Path) -> Iterator[ServeProcess]:
    process = ServeProcess(mesh.env, tmp_path / "serve3.log", workers=3, threads=4)
    MeshbotProcess.start(process)  # ServeProcess.start's readiness wait leaks reset sockets
    try:
        wait_ok(process.port)
        yield process
    finally:
        process.stop()
        print(process.log())


def test_metrics_count_commands_of_every_gunicorn_worker(mesh: Mesh,
                                                         serve3: ServeProcess) -> None:
    with ThreadPoolExecutor(max_workers=6) as pool:
        replies = list(pool.map(lambda _: slash(mesh, serve3.url, "canary payment-service 10"),
                                range(12)))
    assert all("Accepted" in reply for reply in replies)
    # Refused by the policy (not an operator), and by the grammar (no verb to count it under).
    assert "Accepted" not in slash(mesh, serve3.url, "canary payment-service 10", user="U0NOBODY")
    assert "Accepted" not in slash(mesh, serve3.url, "canary Not_A_Service 10")

    # Whichever worker answers the scrape, it reports every worker's counts.
    for _ in range(5):
        assert sample(serve3.port, "meshbot_commands_total",
                      verb="canary", outcome="accepted") == 12
    assert sample(serve3.port, "meshbot_commands_total", verb="canary", outcome="refused") == 1
    assert sample(serve3.port, "meshbot_commands_total", verb="invalid", outcome="refused") == 1
    # Read from Redis at scrape time: the work waits for a worker.
    assert sample(serve3.port, "meshbot_queue_depth", queue="meshbot") == 12
    assert sample(serve3.port, "meshbot_redis_up") == 1

    # Every worker that counted is replaced by a fresh one: the counts are not lost with them.
    assert serve3.process is not None
    old = gunicorn_workers(serve3.process.pid)
    assert len(old) == 3
    for pid in old:
        os.kill(pid, signal.SIGTERM)
    eventually(lambda: len(gunicorn_workers(serve3.process.pid) - old) == 3, 30,  # type: ignore[union-attr]
               "gunicorn replaced its workers")
    wait_ok(serve3.port)
    assert sample(serve3.port, "meshbot_commands_total", verb="canary", outcome="accepted") == 12


def test_serve_readyz_follows_its_redis(mesh: Mesh, tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as own, \
            ServeProcess({**mesh.env, "REDIS_URL": own.url}, tmp_path / "serve.log") as serve:
        assert get(serve.port, "/healthz")[0] == 200
        status, body = get(serve.port, "/readyz")
        assert status == 200 and json.loads(body)["redis"] == "ok"
        assert "AOF" in json.loads(body)["warning"]
        own.stop()
        status, body = get(serve.port, "/readyz")
        assert status == 503 and json.loads(body)["redis"].startswith("unreachable")
        assert get(serve.port, "/healthz")[0] == 200
        assert sample(serve.port, "meshbot_redis_up") == 0


def test_worker_health_port(mesh: Mesh, tmp_path: Path) -> None:
    port = free_port()
    with RedisServer(tmp_path / "redis", appendonly=True) as own, \
            MeshbotProcess(["worker", "--metrics-port", str(port)],
                           {**mesh.env, "REDIS_URL": own.url}, tmp_path / "worker.log"):
        wait_ok(port)
        status, body = get(port, "/readyz")
        assert status == 200 and json.loads(body) == {"redis": "ok"}
        assert get(port, "/nope")[0] == 404
        assert sample(port, "meshbot_queue_depth", queue="meshbot-urgent") == 0
        # The health port opens before RQ's worker registers in Redis; once it has, the worker
        # rides out a Redis outage (its loop retries), so the port keeps answering.
        with redis.Redis.from_url(own.url) as client:
            eventually(lambda: Worker.all(connection=client), 30, "the RQ worker registered")
        own.stop()
        status, body = get(port, "/readyz")
        assert status == 503 and json.loads(body)["redis"].startswith("unreachable")
        assert get(port, "/healthz")[0] == 200


def test_worker_counts_jobs_and_logs_their_request_id(mesh: Mesh, server: ServeProcess,
                                                      tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "worker.log"
    with MeshbotProcess(["worker", "--metrics-port", str(port)], mesh.env, log_path) as worker:
        wait_ok(port)
        assert "Accepted" in slash(mesh, server.url, "canary payment-service 10")
        eventually(lambda: sample(port, "meshbot_commands_total",
                                  verb="canary", outcome="done") == 1, 30, "the canary job ran")
        assert mesh.weights("payment-service") == {"stable": 90, "canary": 10}

        assert "Accepted" in slash(mesh, server.url, "rollback payment-service")
        eventually(lambda: sample(port, "meshbot_rollbacks_total", kind="manual") == 1, 30,
                   "the rollback job ran")
        assert mesh.weights("payment-service") == {"stable": 100, "canary": 0}
        assert sample(port, "meshbot_queue_depth", queue="meshbot") == 0
        assert sample(port, "meshbot_rollouts", phase="rolled_back") == 1

        lines = [json.loads(line) for line in worker.log().splitlines()
                 if line.startswith("{")]
        done = [line for line in lines if line["msg"].startswith("done")]
        assert done and all(line["request_id"] and line["service"] == "payment-service"
                            for line in done)


def test_an_idle_worker_stops_on_sigterm(mesh: Mesh, tmp_path: Path) -> None:
    """Kubernetes stops a pod with SIGTERM: an idle `meshbot worker` exits at once, cleanly,
    and takes its lease with it (SIGKILL after the grace period would leave it to lapse)."""
    port = free_port()
    worker = MeshbotProcess(["worker", "--metrics-port", str(port)], mesh.env,
                            tmp_path / "worker.log").start()
    try:
        wait_ok(port)
        eventually(lambda: Worker.all(connection=mesh.redis), 30, "the RQ worker registered")
        assert worker.process is not None
        worker.process.terminate()
        assert worker.process.wait(timeout=8) == 0, worker.log()
        assert not mesh.redis.keys("meshbot:worker-alive:*")
        assert "stopped without being asked" not in worker.log()
    finally:
        worker.stop()
