"""The health port of ``meshbot worker`` and ``meshbot socket`` over real HTTP, against a private
Redis this test can stop; and Socket Mode's startup (what can be checked without Slack).

Socket Mode is not connected to anything here: the Slack stand-in has no WebSocket endpoint, so
the tests stop at the assembled, unconnected handler and its readiness.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from slack_bolt.request import BoltRequest

from bot.socket_mode import MissingAppToken, build_handler
from jobs.runtime import api
from meshbot.health_server import HealthServer
from meshbot.settings import Settings
from playground.redis_server import RedisServer
from tests.fixtures.meshbot import CHANNEL, CONTRACT_POLICY, OPERATOR
from tests.fixtures.slack import SlackEnv


def get(port: int, path: str) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        conn.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own: stopping it touches no other test."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def health_server(url: str, **kwargs: object) -> HealthServer:
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return HealthServer(client, host="127.0.0.1", port=0,
                        read_state=lambda: api.read_state(client, "meshbot"),
                        **kwargs)  # type: ignore[arg-type]


def test_readyz_follows_redis_and_warns_without_aof(own_redis: RedisServer) -> None:
    with health_server(own_redis.url) as server:
        assert get(server.port, "/healthz")[0] == 200
        status, content_type, body = get(server.port, "/readyz")
        assert (status, content_type) == (200, "application/json")
        report = json.loads(body)
        assert report["redis"] == "ok"
        assert "AOF" in report["warning"] and "approvals" in report["warning"]

        own_redis.stop()
        status, _, body = get(server.port, "/readyz")
        assert status == 503
        assert json.loads(body)["redis"].startswith("unreachable")
        # Alive all the same: a Redis outage must not get the pod restarted.
        assert get(server.port, "/healthz")[0] == 200
        status, _, metrics = get(server.port, "/metrics")
        assert status == 200 and "meshbot_redis_up 0.0" in metrics

        own_redis.start()
        assert get(server.port, "/readyz")[0] == 200


def test_readyz_without_warning_when_redis_persists(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "aof", appendonly=True) as aof, \
            health_server(aof.url) as server:
        status, _, body = get(server.port, "/readyz")
        assert status == 200
        assert json.loads(body) == {"redis": "ok"}


def test_metrics_and_exact_paths(own_redis: RedisServer) -> None:
    with health_server(own_redis.url) as server:
        status, content_type, body = get(server.port, "/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        assert 'meshbot_queue_depth{queue="meshbot"} 0.0' in body
        assert "meshbot_last_tick_timestamp" in body
        # Not prometheus_client's start_http_server, which answers every path with metrics.
        assert get(server.port, "/")[0] == 404
        assert get(server.port, "/healthz/extra")[0] == 404


def test_readyz_includes_extra_checks(own_redis: RedisServer) -> None:
    connected = {"now": False}
    with health_server(own_redis.url,
                       ready_checks={"slack": lambda: connected["now"]}) as server:
        status, _, body = get(server.port, "/readyz")
        assert status == 503 and json.loads(body)["slack"] == "not ready"
        connected["now"] = True
        status, _, body = get(server.port, "/readyz")
        assert status == 200 and json.loads(body)["slack"] == "ok"


# -- meshbot socket


def socket_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    return {**env, "MESHBOT_POLICY": str(CONTRACT_POLICY), "SLACK_BOT_TOKEN": "xoxb-test",
            **extra}


@pytest.mark.parametrize(("token", "says"), [
    (None, "SLACK_APP_TOKEN is not set"),
    ("xoxb-not-an-app-token", "must start with xapp-"),
])
def test_socket_mode_refuses_to_start_without_an_app_token(token: str | None, says: str) -> None:
    env = socket_env(**({"SLACK_APP_TOKEN": token} if token else {}))
    done = subprocess.run([sys.executable, "-m", "meshbot.cli", "socket", "--metrics-port", "0"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert says in done.stderr
    assert "Traceback" not in done.stderr


def test_socket_mode_runs_the_http_mode_app(monkeypatch: pytest.MonkeyPatch, slack_env: SlackEnv,
                                            redis_client: redis.Redis) -> None:
    """A slash command as Socket Mode hands it to Bolt (a dict, no signature) is gated and
    enqueued exactly as over HTTP."""
    monkeypatch.setenv("MESHBOT_POLICY", str(CONTRACT_POLICY))
    monkeypatch.delenv("SLACK_SIGNING_SECRET")  # not needed in Socket Mode
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1-test")
    handler = build_handler(Settings())
    assert handler.app_token == "xapp-1-test"
    assert not handler.client.is_connected()  # connecting is left to run_socket_mode

    response = handler.app.dispatch(BoltRequest(mode="socket_mode", body={
        "command": "/mesh", "text": "canary payment-service 10", "user_id": OPERATOR,
        "channel_id": CHANNEL, "trigger_id": "1337.42.abc", "team_id": "T0TEAM",
        "response_url": "http://127.0.0.1:9/unused",
    }))

    assert response.status == 200
    assert "Accepted" in response.body
    assert api.read_state(redis_client, "meshbot").queue_depths["meshbot"] == 1  # type: ignore[union-attr]


def test_build_handler_refuses_before_touching_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, val in socket_env(MESHBOT_POLICY="/nonexistent/policy.yaml").items():
        monkeypatch.setenv(key, val)
    with pytest.raises(MissingAppToken):
        build_handler(Settings())
