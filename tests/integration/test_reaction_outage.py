"""An approval reaction that arrives while Redis is down is not lost: over HTTP, the WSGI app
``meshbot serve`` runs answers it with a non-2xx, so Slack delivers the event again
(X-Slack-Retry-Num), and that retry, once Redis is back, counts the vote once.

Before, the listener caught the failure and returned: Bolt answered 200, Slack never re-delivered
the event, and the vote was gone.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bot.assembly import build_wsgi
from jobs.adapters.approval_store import ApprovalStore
from jobs.domain.approval_rules import PendingApproval
from meshbot.commands import Command, Request, Verb
from meshbot.settings import Settings, packaged_default_policy
from playground.redis_server import RedisServer
from playground.slack_client import reaction_event, sign
from tests.fixtures.slack import SlackEnv

APPROVER, OTHER_APPROVER = "U0APPROVER1", "U0APPROVER2"
CHANNEL, TS = "C0MESHOPS", "1796190000.000200"
EVENT_ID = "Ev0OUTAGE1"


@pytest.fixture
def own_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """A redis-server this test stops and starts again (AOF: what it held comes back)."""
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        monkeypatch.setenv("REDIS_URL", server.url)
        monkeypatch.setenv("MESHBOT_POLICY", str(packaged_default_policy()))
        yield server


def pending_promote() -> PendingApproval:
    """A promote waiting for two approvals (so one vote shows as one vote)."""
    now = time.time()
    request = Request(id="trigger-outage", command=Command(verb=Verb.PROMOTE,
                                                           target="payment-service"),
                      user="U0OPERATOR1", channel=CHANNEL, received_at=now)
    return PendingApproval(channel=CHANNEL, ts=TS, request=request, plan="canary → 100",
                           precondition={}, required=2, eligible=(APPROVER, OTHER_APPROVER),
                           created_at=now, expires_at=now + 600)


def event_body() -> bytes:
    return json.dumps({
        "token": "deprecated-verification-token", "team_id": "T0MESHBOT",
        "api_app_id": "A0MESHBOT", "type": "event_callback", "event_id": EVENT_ID,
        "event_time": int(time.time()),
        "event": reaction_event("reaction_added", user=APPROVER, reaction="white_check_mark",
                                channel=CHANNEL, ts=TS),
        "authorizations": [{"enterprise_id": None, "team_id": "T0MESHBOT",
                            "user_id": "U0MESHBOT", "is_bot": True,
                            "is_enterprise_install": False}],
    }).encode()


def deliver(app: Any, secret: str, retry_num: int | None = None) -> str:
    """The event as Slack POSTs it (signed; a retry carries X-Slack-Retry-Num); the status."""
    body, timestamp = event_body(), int(time.time())
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/slack/events", "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
        "HTTP_X_SLACK_REQUEST_TIMESTAMP": str(timestamp),
        "HTTP_X_SLACK_SIGNATURE": sign(secret, body, timestamp),
    }
    if retry_num is not None:
        environ["HTTP_X_SLACK_RETRY_NUM"] = str(retry_num)
        environ["HTTP_X_SLACK_RETRY_REASON"] = "http_error"
    seen: dict[str, str] = {}

    def start_response(status: str, _headers: list[tuple[str, str]], _exc: Any = None) -> None:
        seen["status"] = status

    b"".join(app(environ, start_response))
    return seen["status"]


def test_a_reaction_during_a_redis_outage_is_refused_and_slacks_retry_counts_it_once(
        own_redis: RedisServer, slack_env: SlackEnv,
        caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis.from_url(own_redis.url)
    try:
        ApprovalStore(client).create(pending_promote())
    finally:
        client.close()
    app = build_wsgi(Settings())

    own_redis.stop()
    caplog.clear()  # what building the app logged is not the delivery's
    with caplog.at_level(logging.WARNING):
        status = deliver(app, slack_env.signing_secret)
    assert not status.startswith("2")  # Slack re-delivers an event it was not answered 2xx
    assert status == "503 Service Unavailable"
    # One plain line says what happened; no traceback.
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in problems] == ["meshbot.bot"]
    assert "reaction not counted, Slack will deliver it again" in problems[0].getMessage()
    assert "Redis did not take the reaction" in problems[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records)

    own_redis.start()
    assert deliver(app, slack_env.signing_secret, retry_num=1) == "200 OK"
    assert deliver(app, slack_env.signing_secret, retry_num=2) == "200 OK"  # once more: no-op
    client = redis.Redis.from_url(own_redis.url)
    try:
        counted = ApprovalStore(client).get(CHANNEL, TS)
    finally:
        client.close()
    assert counted is not None and counted.approvals == (APPROVER,)
