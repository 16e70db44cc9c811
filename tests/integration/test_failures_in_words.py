"""Library text does not reach people: each outside system failing the way it does, met on the
wire (a port that refuses, a host name that does not resolve, a server that drops or never
answers, a Redis user without rights, a response_url that answers 500 with a stack, a
kubeconfig that is not there), and what meshbot says about it — in words, the cause named
truly, the library's own text absent (it goes to the log)."""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
import redis
import requests

from jobs.adapters.kube import KubeClient
from jobs.adapters.prometheus import MetricsSource
from jobs.adapters.slack_notifier import Notifier
from jobs.runtime.context import JobContext
from jobs.runtime.handlers.readiness import meshbot_health
from meshbot.errors import (
    MeshbotError,
    MetricsUnavailable,
    PermanentError,
    QueueUnavailable,
    TemporaryError,
)
from meshbot.network_words import in_words, redis_in_words
from meshbot.redis_client import translate
from playground.redis_server import free_port
from tests.fixtures.far_side import Answer, loopback
from tests.integration.test_fault_matrix import LIBRARY_TEXT


def assert_no_library_text(said: str) -> None:
    shown = [t for t in (*LIBRARY_TEXT, "Error(", "errno", "socket", "gaierror") if t in said]
    assert not shown, f"library text {shown} reached a person: {said!r}"


# --- far sides that fail on the wire --------------------------------------------------------


FAR_SIDES: dict[str, tuple[str, Answer | None]] = {
    "refused": ("refused the connection", None),
    "not-found": ("could not be found (its host name does not resolve)", None),
    "close": ("dropped the connection", "close"),
    "reset": ("dropped the connection", "reset"),
}


@pytest.fixture(params=list(FAR_SIDES))
def far_side(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(a URL failing one way, the words for it)."""
    words, answer = FAR_SIDES[request.param]
    if request.param == "refused":
        yield f"http://127.0.0.1:{free_port()}", words
    elif request.param == "not-found":
        yield "http://prometheus.no-such-zone.invalid:9090", words
    else:
        assert answer is not None
        with loopback(answer) as port:
            yield f"http://127.0.0.1:{port}", words


def test_a_failed_connection_is_named_as_it_failed(far_side: tuple[str, str]) -> None:
    url, words = far_side
    with pytest.raises(requests.ConnectionError) as caught:
        requests.get(url, timeout=2)
    assert in_words(caught.value).startswith(words)


def test_prometheus_says_how_the_connection_failed(far_side: tuple[str, str]) -> None:
    url, words = far_side
    with MetricsSource(url, timeout=2) as source, \
            pytest.raises(MetricsUnavailable) as caught:
        source.query("up")
    assert caught.value.message == f"Prometheus at {url} {words}" + (
        " (is it running?)" if words == "refused the connection" else "")
    assert_no_library_text(caught.value.message)


def test_prometheus_that_never_answers_did_not_answer() -> None:
    with loopback("silent") as port:
        url = f"http://127.0.0.1:{port}"
        with MetricsSource(url, timeout=1) as source, \
                pytest.raises(MetricsUnavailable) as caught:
            source.query("up")
        assert "did not answer" in caught.value.message
        assert_no_library_text(caught.value.message)


# --- /mesh readiness: meshbot's own Redis ---------------------------------------------------


def health_rows(client: redis.Redis) -> dict[str, tuple[bool, str]]:
    ctx = cast(JobContext, SimpleNamespace(
        redis=client, store=SimpleNamespace(keys=SimpleNamespace(last_tick="meshbot:last_tick"))))
    return {name: (ok, detail) for name, ok, detail in meshbot_health(ctx, now=0.0)}


def test_readiness_says_redis_refused_in_words() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=1)
    rows = health_rows(client)
    assert rows == {"meshbot Redis reachable": (
        False, "Redis refused the connection (is it running?)")}
    assert_no_library_text(rows["meshbot Redis reachable"][1])


def test_readiness_says_redis_refused_meshbots_credentials(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("ACL", "SETUSER", "meshbot-limited", "on", ">limited-pw", "~*",
                          "+ping", "+get")  # no INFO
    try:
        limited = redis.Redis.from_url(redis_url, username="meshbot-limited",
                                       password="limited-pw")
        rows = health_rows(limited)
        said = rows["meshbot Redis reachable"]
        assert said == (False, "Redis refused meshbot's credentials (check the user and "
                               "password in REDIS_URL)")
        assert "NOPERM" not in said[1]
        assert_no_library_text(said[1])
        limited.close()
    finally:
        admin.execute_command("ACL", "DELUSER", "meshbot-limited")
        admin.close()


def test_redis_words_for_each_kind_of_answer() -> None:
    assert redis_in_words(redis.BusyLoadingError("LOADING ...")).startswith("is still loading")
    assert redis_in_words(redis.ReadOnlyError("READONLY ...")).startswith("is read-only")
    assert redis_in_words(redis.ResponseError("WRONGTYPE ...")) == "rejected meshbot's command"
    assert redis_in_words(redis.ResponseError("BUSY Redis is busy running a script. ...")) == (
        "is busy running a script")
    assert redis_in_words(redis.WatchError("Watched variable changed.")) == (
        "saw another writer come first")


# --- a job's Redis failing: ``translate`` says it in the same words -------------------------


def translated(exc: redis.RedisError,
               caplog: pytest.LogCaptureFixture) -> tuple[MeshbotError, str]:
    """(``exc`` as a job's error, whose message people read; what the log says of it)."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="meshbot.redis"):
        error = translate(exc, "Redis failed during the job")
    [logged] = [r.getMessage() for r in caplog.records if r.name == "meshbot.redis"]
    return error, logged


def test_a_job_finding_redis_refused_is_told_in_words_and_logged_in_full(
        caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=1)
    with pytest.raises(redis.ConnectionError) as caught:
        client.ping()
    error, logged = translated(caught.value, caplog)
    assert isinstance(error, QueueUnavailable)  # tried again later
    said = error.message
    assert said == "Redis failed during the job: Redis refused the connection (is it running?)"
    assert "ConnectionError" not in said
    assert_no_library_text(said)
    assert "ConnectionError" in logged and str(caught.value).strip() in logged


def test_a_command_redis_rejects_is_told_in_words_with_its_reply_in_the_log(
        redis_client: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    redis_client.set("meshbot:test:a-string", "not a list")
    with pytest.raises(redis.ResponseError) as caught:
        redis_client.lpush("meshbot:test:a-string", "x")  # WRONGTYPE: a bug no retry mends
    error, logged = translated(caught.value, caplog)
    assert isinstance(error, PermanentError)  # not retried
    said = error.message
    assert said == "Redis failed during the job: Redis rejected meshbot's command"
    assert "WRONGTYPE" not in said and "ResponseError" not in said
    assert "ResponseError: WRONGTYPE" in logged


# --- a response_url that answers 500 with a body --------------------------------------------


class _Failing(http.server.BaseHTTPRequestHandler):
    BODY = b"<html><body>Traceback (most recent call last): upstream proxy error</body></html>"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.BODY)))
        self.end_headers()
        self.wfile.write(self.BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def failing_response_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/response/abc"
    finally:
        server.shutdown()
        server.server_close()


def test_a_response_url_500_is_said_without_its_body(failing_response_url: str) -> None:
    notifier = Notifier("xoxb-test", f"http://127.0.0.1:{free_port()}/api/")
    with pytest.raises(TemporaryError) as caught:
        notifier.ephemeral("not allowed", response_url=failing_response_url)
    assert caught.value.message == "Slack's response_url failed (HTTP 502)"
    assert "upstream proxy error" not in caught.value.message and "<html>" not in str(caught.value)
    assert_no_library_text(str(caught.value))


# --- Kubernetes configuration ---------------------------------------------------------------


def test_missing_kubeconfig_is_said_in_words(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(PermanentError) as caught:
        KubeClient.from_environment()
    said = caught.value.message
    assert said.startswith("meshbot could not load its Kubernetes configuration (KUBECONFIG="
                           f"{tmp_path / 'absent'}): the file is missing, unreadable or not a "
                           "kubeconfig"), said
    assert "Invalid kube-config" not in said and "No configuration found" not in said
    assert_no_library_text(said)


def test_a_broken_kubeconfig_is_said_in_words(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    broken = tmp_path / "config"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    monkeypatch.setenv("KUBECONFIG", str(broken))
    with pytest.raises(PermanentError) as caught:
        KubeClient.from_environment()
    assert caught.value.message.startswith("meshbot could not load its Kubernetes configuration")
    assert "current-context" not in caught.value.message
    assert_no_library_text(caught.value.message)
