"""Malformed requests on ``POST /slack/events`` get a 4xx and change nothing — before the
signature is checked (what anybody can send) and after (what a signed but odd payload holds)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from playground.processes import ServeProcess
from playground.redis_server import free_port
from playground.slack_client import SlackSender
from tests.fixtures.slack import SlackEnv
from tests.integration.test_slash_ack import assert_nothing_taken


@pytest.fixture
def server(slack_env: SlackEnv, policy_path: Path, redis_url: str,
           tmp_path: Path) -> Iterator[ServeProcess]:
    env = {"SLACK_API_URL": slack_env.api_url, "SLACK_BOT_TOKEN": slack_env.bot_token,
           "SLACK_SIGNING_SECRET": slack_env.signing_secret, "REDIS_URL": redis_url,
           "MESHBOT_POLICY": str(policy_path), "KUBECONFIG": str(tmp_path / "none"),
           "PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}"}
    with ServeProcess(env, tmp_path / "serve.log") as process:
        yield process
        log = process.log()
    assert "Traceback" not in log, log


def raw_post(server: ServeProcess, body: bytes, headers: dict[str, str]) -> int:
    return raw_answer(server, body, headers)[0]


def raw_answer(server: ServeProcess, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", "/slack/events", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


NOW = str(int(time.time()))


@pytest.mark.parametrize(("body", "headers", "reason"), [
    (b"{not json", {"Content-Type": "application/json", "X-Slack-Request-Timestamp": NOW},
     "body is not JSON"),
    (b"[1, 2]", {"Content-Type": "application/json", "X-Slack-Request-Timestamp": NOW},
     "body is not a JSON object"),
    (b"text=\xff\xfe", {"Content-Type": "application/x-www-form-urlencoded",
                        "X-Slack-Request-Timestamp": NOW}, "body is not UTF-8"),
    (b"text=help", {"Content-Type": "application/x-www-form-urlencoded",
                    "X-Slack-Request-Timestamp": "abc"}, "X-Slack-Request-Timestamp"),
    (b"payload=%7Bnope", {"Content-Type": "application/x-www-form-urlencoded",
                          "X-Slack-Request-Timestamp": NOW}, "body is not JSON"),
    # Bolt parses any body that starts with "{" as JSON, whatever its content type says.
    (b"{not json", {"Content-Type": "application/x-www-form-urlencoded",
                    "X-Slack-Request-Timestamp": NOW}, "body is not JSON"),
    (b"{not json", {"Content-Type": "text/plain", "X-Slack-Request-Timestamp": NOW},
     "body is not JSON"),
], ids=["invalid-json", "json-array", "not-utf8", "timestamp-abc", "bad-payload-field",
        "brace-as-form", "brace-as-text"])
def test_unsigned_garbage_gets_a_4xx(server: ServeProcess, redis_url: str, body: bytes,
                                     headers: dict[str, str], reason: str) -> None:
    status, answer = raw_answer(server, body, headers)
    assert 400 <= status < 500
    assert reason in json.loads(answer)["error"]
    assert_nothing_taken(redis_url)


@pytest.mark.parametrize("payload", [
    {"type": "event_callback", "event_id": "Ev1", "event": None},
    {"type": "event_callback", "event_id": "Ev2", "event": "reaction_added"},
    {"type": "event_callback", "event_id": "Ev3",
     "event": {"type": "reaction_added", "user": "U1", "reaction": "x", "item": "message"}},
], ids=["event-null", "event-string", "item-string"])
@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded",
                                          "text/plain"])
def test_signed_events_of_the_wrong_shape_get_a_4xx(server: ServeProcess, slack_env: SlackEnv,
                                                   payload: dict[str, object],
                                                   content_type: str, redis_url: str) -> None:
    with SlackSender(f"{server.url}/slack/events", slack_env.signing_secret) as sender:
        reply = sender.post(json.dumps(payload).encode(), content_type)
    assert 400 <= reply.status < 500
    assert "is not an object" in reply.json()["error"]
    assert slack_env.api.calls("chat.postMessage") == []
    assert_nothing_taken(redis_url)


def test_a_body_past_the_limit_is_refused_unread(server: ServeProcess) -> None:
    """A client announcing 5 MB gets 413 after sending the first kilobyte: the rest is never
    read (nor parsed)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("POST", "/slack/events")
        conn.putheader("Content-Type", "application/x-www-form-urlencoded")
        conn.putheader("X-Slack-Request-Timestamp", NOW)
        conn.putheader("Content-Length", str(5 * 1024 * 1024))
        conn.endheaders()
        conn.send(b"text=" + b"a" * 1024)
        response = conn.getresponse()
        assert response.status == 413
    finally:
        conn.close()


@pytest.mark.parametrize("fault", ["wrong-secret", "stale", "unsigned"])
def test_a_slash_command_not_signed_by_slack_now_gets_401(
        server: ServeProcess, slack_env: SlackEnv, redis_url: str, fault: str) -> None:
    """A /mesh command is answered before Bolt's dispatch (``bot.slash_ack``): it is held to
    the same signature check, with Bolt's 401, and takes nothing."""
    secret = "not-the-signing-secret" if fault == "wrong-secret" else slack_env.signing_secret
    stale = int(time.time()) - 5 * 60 - 30 if fault == "stale" else None
    with SlackSender(f"{server.url}/slack/events", secret) as sender:
        if fault == "unsigned":
            body = urlencode({"command": "/mesh", "text": "canary payment-service 10",
                              "user_id": "U0OPERATOR1", "channel_id": "C0MESHOPS"}).encode()
            status = raw_post(server, body, {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Slack-Request-Timestamp": NOW})
            answer: object = None
        else:
            reply = sender.slash_command(text="canary payment-service 10",
                                         user_id="U0OPERATOR1", channel_id="C0MESHOPS",
                                         response_url="http://127.0.0.1:9/r", timestamp=stale)
            status, answer = reply.status, reply.json()
    assert status == 401
    if answer is not None:
        assert answer == {"error": "invalid request"}
    assert_nothing_taken(redis_url)
