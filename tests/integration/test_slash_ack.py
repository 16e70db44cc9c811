"""``/mesh`` over HTTP is answered before Bolt's dispatch (``bot.slash_ack``): what the caller
sees must be what Bolt would have sent for the same request — status, headers and body — and
every request that is not plainly a ``/mesh`` command must still reach Bolt with its body.

Each request goes through the WSGI app ``meshbot serve`` runs and through the same app without
the fast path (Bolt alone), on a real Redis and the Slack stand-in.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot.assembly import build_app, build_wsgi
from bot.http import MeshbotWSGI
from bot.slash_ack import SlashAck
from meshbot.settings import Settings
from playground.redis_server import free_port
from playground.slack_client import new_trigger_id, sign
from tests.fixtures.meshbot import CHANNEL, CONTRACT_POLICY, OPERATOR
from tests.fixtures.slack import SlackEnv

FORM = "application/x-www-form-urlencoded"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class Answer:
    status: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Apps:
    served: WSGIApp  # what `meshbot serve` runs
    bolt_only: WSGIApp  # the same app without the fast path
    fast: SlashAck
    secret: str


@pytest.fixture
def apps(slack_env: SlackEnv, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Apps:
    monkeypatch.setenv("MESHBOT_POLICY", str(CONTRACT_POLICY))
    slack_env.api.add_channel(CHANNEL, "mesh-ops")
    return _apps(slack_env)


def _apps(slack_env: SlackEnv) -> Apps:
    settings = Settings()
    app, ctx = build_app(settings)
    served = build_wsgi(settings)
    # What `meshbot serve` loads carries the fast path: the comparisons are about it.
    assert isinstance(served.commands, SlashAck)
    return Apps(served=served,
                bolt_only=MeshbotWSGI(SlackRequestHandler(app), ctx.redis,
                                      queue=settings.queue_name),
                fast=SlashAck(ctx, slack_env.signing_secret), secret=slack_env.signing_secret)


def command_form(text: str, *, command: str = "/mesh", **extra: str) -> bytes:
    """A slash command's form, fields as Slack sends them, with a trigger id of its own."""
    return urlencode({
        "token": "deprecated-verification-token", "team_id": "T0MESH",
        "team_domain": "meshbot", "channel_id": CHANNEL, "channel_name": "mesh-ops",
        "user_id": OPERATOR, "user_name": "operator", "command": command, "text": text,
        "api_app_id": "A0MESHBOT", "is_enterprise_install": "false",
        "response_url": "http://127.0.0.1:9/response", "trigger_id": new_trigger_id(),
        **extra}).encode()


def environ(body: bytes, *, secret: str, content_type: str = FORM, age_s: int = 0,
            signature: str | None = None, signed: bool = True) -> dict[str, Any]:
    timestamp = int(time.time()) - age_s
    env: dict[str, Any] = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/slack/events", "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
        "HTTP_X_SLACK_REQUEST_TIMESTAMP": str(timestamp),
    }
    if signed:
        env["HTTP_X_SLACK_SIGNATURE"] = signature or sign(secret, body, timestamp)
    return env


def call(app: WSGIApp, env: dict[str, Any]) -> Answer:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], _exc: Any = None) -> None:
        seen.update(status=status, headers=headers)

    body = b"".join(app(env, start_response))
    return Answer(seen["status"], seen["headers"], body)


def both(apps: Apps, make_body: Callable[[], bytes], **options: Any) -> tuple[Answer, Answer]:
    """The served app's answer and Bolt's, each to its own request (its own trigger id: the
    second is no Slack retry of the first)."""
    served = call(apps.served, environ(make_body(), secret=apps.secret, **options))
    bolt = call(apps.bolt_only, environ(make_body(), secret=apps.secret, **options))
    return served, bolt


COMMANDS: dict[str, tuple[Callable[[], bytes], dict[str, Any]]] = {
    "accepted": (lambda: command_form("canary payment-service 10"), {}),
    "refused-grammar": (lambda: command_form("canary payment-service abc"), {}),
    "refused-target": (lambda: command_form("canary Payment_Service 10"), {}),
    "help": (lambda: command_form("help"), {}),
    "empty-text": (lambda: command_form(""), {}),
    "non-ascii": (lambda: command_form("canary päyment-sérvice 10 ✓"), {}),
    "content-type-charset": (lambda: command_form("help"),
                             {"content_type": FORM + "; charset=utf-8"}),
    "wrong-signature": (lambda: command_form("canary payment-service 10"),
                        {"signature": "v0=" + "0" * 64}),
    "missing-signature": (lambda: command_form("canary payment-service 10"), {"signed": False}),
    "stale": (lambda: command_form("canary payment-service 10"), {"age_s": 5 * 60 + 5}),
    "from-the-future": (lambda: command_form("canary payment-service 10"),
                        {"age_s": -(5 * 60 + 5)}),
    "nearly-stale": (lambda: command_form("canary payment-service 10"), {"age_s": 5 * 60 - 5}),
}


@pytest.mark.parametrize("case", list(COMMANDS))
def test_a_mesh_command_is_answered_as_bolt_answers_it(apps: Apps, case: str) -> None:
    make_body, options = COMMANDS[case]
    served, bolt = both(apps, make_body, **options)
    assert served == bolt
    # ... and the fast path, not Bolt, gave that answer.
    assert apps.fast(environ(make_body(), secret=apps.secret, **options),
                     lambda *_: None) is not None


def test_bolts_ack_is_what_slack_expects(apps: Apps) -> None:
    """Pinned, so that a change on either side is seen: an ephemeral JSON message."""
    served, _ = both(apps, lambda: command_form("canary payment-service abc"))
    assert served.status == "200 OK"
    assert dict(served.headers)["content-type"] == "application/json;charset=utf-8"
    body = json.loads(served.body)
    assert list(body) == ["text", "response_type"] and body["response_type"] == "ephemeral"
    assert body["text"].startswith(":no_entry: Refused:")


@pytest.mark.parametrize("case", ["wrong-signature", "stale"])
def test_an_unverified_command_is_401_and_takes_nothing(apps: Apps, case: str,
                                                        redis_url: str) -> None:
    make_body, options = COMMANDS[case]
    served = call(apps.served, environ(make_body(), secret=apps.secret, **options))
    assert (served.status, json.loads(served.body)) == ("401 Unauthorized",
                                                        {"error": "invalid request"})
    assert_nothing_taken(redis_url)


def assert_nothing_taken(redis_url: str) -> None:
    """Nothing queued, marked as received, or audited."""
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.keys("rq:*") == [] and client.keys("meshbot:request:*") == []
        assert client.exists("meshbot:audit", "meshbot:sequence") == 0
    finally:
        client.close()


def test_redis_down_is_answered_as_bolt_answers_it(slack_env: SlackEnv, redis_url: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHBOT_POLICY", str(CONTRACT_POLICY))
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    apps = _apps(slack_env)
    served, bolt = both(apps, lambda: command_form("canary payment-service 10"))
    assert served == bolt
    assert served.status == "200 OK"
    assert "cannot reach its queue" in json.loads(served.body)["text"]


def _json(payload: dict[str, Any]) -> Callable[[], bytes]:
    return lambda: json.dumps(payload).encode()


# Requests that are not plainly a /mesh command: Bolt's, body and all.
HANDED_ON: dict[str, tuple[Callable[[], bytes], dict[str, Any]]] = {
    "other-command": (lambda: command_form("help", command="/other"), {}),
    "ssl-check": (lambda: command_form("", ssl_check="1"), {"signed": False}),
    "url-verification-form": (lambda: command_form("", type="url_verification",
                                                   challenge="abc"), {}),
    "json-command": (_json({"command": "/mesh", "text": "help", "user_id": OPERATOR,
                            "channel_id": CHANNEL}), {"content_type": "application/json"}),
    "url-verification": (_json({"type": "url_verification", "challenge": "xyz",
                                "token": "t"}), {"content_type": "application/json"}),
    "interactivity": (lambda: urlencode({"payload": json.dumps(
        {"type": "block_actions", "team": {"id": "T0MESH"}, "user": {"id": OPERATOR},
         "actions": []})}).encode(), {}),
}


@pytest.mark.parametrize("case", list(HANDED_ON))
def test_anything_else_goes_to_bolt_with_its_body(apps: Apps, case: str) -> None:
    make_body, options = HANDED_ON[case]
    body = make_body()
    env = environ(body, secret=apps.secret, **options)
    assert apps.fast(env, lambda *_: None) is None
    assert env["wsgi.input"].read() == body  # Bolt reads it whole
    served, bolt = both(apps, make_body, **options)
    assert served == bolt


def test_a_command_naming_a_payload_service_is_answered(apps: Apps) -> None:
    """Bolt takes any form holding the word "payload" for interactivity and answers 404 (Slack
    shows the user a failure); served, it is the command it is."""
    served, bolt = both(apps, lambda: command_form("status payload-service"))
    assert bolt.status.startswith("404")
    assert served.status == "200 OK", served
    answer = json.loads(served.body)
    assert answer["response_type"] == "ephemeral" and answer["text"], answer

