"""One Redis adapter (``meshbot.redis_client``): every client meshbot builds waits a bounded time
on a Redis that is down or hangs, and RQ's loop losing Redis is one warning line.

Redis hangs here as a listening socket that never accepts: the kernel completes the connection,
nothing ever answers. Redis is down as a port nobody listens on.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bot.assembly import build_app
from jobs.runtime import context, worker
from meshbot.health_server import start_health_server
from meshbot.redis_client import connect
from meshbot.settings import Settings
from playground.redis_server import free_port
from playground.tcp_proxy import CuttingProxy
from tests.fixtures.meshbot import CONTRACT_POLICY
from tests.fixtures.slack import SlackEnv


@pytest.fixture
def hung_redis_url() -> Iterator[str]:
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        listener.close()


def _fails_within(call: Callable[[], Any], seconds: float) -> tuple[BaseException, float]:
    """Run ``call`` in a thread (a hang must fail the test, not block it); what it raised and
    how long it took."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=seconds + 10)
    took = time.monotonic() - started
    assert not thread.is_alive(), f"still waiting on Redis after {took:.1f}s"
    assert outcome, "the call succeeded against a Redis that is not there"
    assert took <= seconds, f"took {took:.2f}s, more than {seconds}s"
    return outcome[0], took


def test_the_jobs_client_gives_up_on_a_hung_redis(
        hung_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """It had no socket timeout: a job blocked forever on a hung Redis, with nothing logged."""
    monkeypatch.setenv("REDIS_URL", hung_redis_url)
    context.reset()
    try:
        client = context.current().redis
        error, _took = _fails_within(lambda: client.get("anything"), 5 + 1.5)
    finally:
        context.reset()
    assert isinstance(error, redis.TimeoutError)


@pytest.mark.parametrize("outage", ["refused", "hung"])
def test_the_acks_client_gives_up_within_a_second_and_a_little(
        outage: str, hung_redis_url: str, slack_env: SlackEnv,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Slack waits 3 s for the whole ack, which may need Redis more than once; redis-py's
    default retry (ten times, timeouts too) would spend them all on one call."""
    url = f"redis://127.0.0.1:{free_port()}/0" if outage == "refused" else hung_redis_url
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("MESHBOT_POLICY", str(CONTRACT_POLICY))
    _app, ctx = build_app(Settings())
    error, _took = _fails_within(lambda: ctx.redis.set("k", "v"), 1.5)
    assert isinstance(error, redis.ConnectionError | redis.TimeoutError)


def test_the_health_servers_probe_answers_while_redis_hangs(
        hung_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", hung_redis_url)
    server = start_health_server(Settings(), free_port(), lambda _c, _q: None, host="127.0.0.1")
    try:
        started = time.monotonic()
        status, _body, _type = server.answer("/readyz")
        assert status == 503
        assert time.monotonic() - started < 2 + 1
    finally:
        server.stop()


def test_a_worker_that_finds_redis_hung_waits_for_it_instead_of_crashing(
        hung_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its first call (the lease) timed out: a TimeoutError, which is no ConnectionError, went
    through ``meshbot worker`` and ended the process with a traceback."""
    monkeypatch.setenv("REDIS_URL", hung_redis_url)
    # RQ raises its own connection's socket timeout to wait on its queues (~415 s): the lease
    # is kept with the worker's other client, as ``run_worker`` does.
    started = time.monotonic()
    ended = worker._work(Settings(), connect(hung_redis_url, "worker"), worker.StopSignal(),
                         burst=False, control=connect(hung_redis_url, "ticker"))
    assert ended is False  # run_worker waits for Redis, then starts a worker
    assert time.monotonic() - started < 5 + 2


def test_redis_failing_under_rqs_loop_is_one_warning_line_without_traceback(
        redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A Redis restart ends RQ's worker loop ("found an unhandled exception, quitting" and a
    traceback, each time): the worker is replaced (``meshbot worker``), and the log says so in
    one warning line, keeping tracebacks for bugs."""
    where = urlparse(redis_url)
    with CuttingProxy(where.hostname or "127.0.0.1", where.port or 6379) as proxy:
        proxied = where._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
        connection = redis.Redis.from_url(proxied, socket_timeout=5, retry=Retry(NoBackoff(), 0))
        install = worker.MeshbotWorker._install_signal_handlers

        def cut_then_install(self: worker.MeshbotWorker) -> None:
            # The worker has registered; its loop's first call (heartbeat and "suspended?",
            # one pipeline) finds the connection cut, as a Redis restart would.
            proxy.cut_on(b"EXISTS")
            install(self)

        monkeypatch.setattr(worker.MeshbotWorker, "_install_signal_handlers", cut_then_install)
        with caplog.at_level(logging.INFO):
            ended = worker._work(Settings(), connection, worker.StopSignal(), burst=False)
        connection.close()
    assert proxy.cuts == 1
    assert ended is False  # run_worker starts another once Redis answers
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    said = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].levelno == logging.WARNING and said[0].name == "rq.worker"
    assert "Redis failed (ConnectionError" in said[0].getMessage()


def test_a_bug_in_rqs_loop_keeps_its_traceback(
        redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(self: worker.MeshbotWorker, burst: bool) -> None:
        raise KeyError("a bug, not Redis")

    monkeypatch.setattr(worker.MeshbotWorker, "check_for_suspension", broken)
    with caplog.at_level(logging.INFO):
        worker._work(Settings(), redis_client, worker.StopSignal(), burst=False)
    [logged] = [r for r in caplog.records if r.exc_info]
    assert logged.levelno == logging.ERROR and "unhandled exception" in logged.getMessage()
