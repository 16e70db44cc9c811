"""``POST /alertmanager``: Alertmanager's webhook (payload version 4), authenticated by a bearer
token (``ALERTMANAGER_TOKEN``; Alertmanager's ``http_config.authorization``).

The handler validates and enqueues; a job posts the thread (the bot never talks to the cluster
and answers Alertmanager at once). Alertmanager retries a webhook that failed or timed out, so a
notification whose content was already accepted is acknowledged without enqueueing it again.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis
from pydantic import ValidationError

from jobs.runtime import api
from meshbot.alerts import Notification
from meshbot.errors import QueueUnavailable
from meshbot.settings import Settings

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

log = logging.getLogger("meshbot.alertmanager")
MAX_BODY = 1 << 20  # Alertmanager caps a group's alerts; a megabyte is far beyond a real one


def _answer(start_response: StartResponse, status: str, body: dict[str, Any],
            headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    raw = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(raw))), *(headers or [])])
    return [raw]


class AlertmanagerWebhook:
    """The WSGI handler ``MeshbotWSGI`` routes ``POST /alertmanager`` to."""

    def __init__(self, settings: Settings, redis_client: redis.Redis) -> None:
        self.token = settings.alertmanager_token.get_secret_value()
        self.queue = settings.queue_name
        self.redis = redis_client

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        if not self.token:
            return _answer(start_response, "503 Service Unavailable", {
                "error": "ALERTMANAGER_TOKEN is not set, so meshbot accepts no alerts: set it "
                         "and give Alertmanager the same token (http_config.authorization)"})
        scheme, _, given = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 self.token.encode()):
            return _answer(start_response, "401 Unauthorized",
                           {"error": "a valid 'Authorization: Bearer <token>' is required"},
                           [("WWW-Authenticate", 'Bearer realm="meshbot"')])
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length > MAX_BODY:  # refused unread
            return _answer(start_response, "413 Content Too Large",
                           {"error": f"body over {MAX_BODY} bytes"})
        if length <= 0:
            return _answer(start_response, "400 Bad Request",
                           {"error": f"a JSON body of 1 to {MAX_BODY} bytes is required"})
        body = environ["wsgi.input"].read(length)
        try:
            notification = Notification.model_validate_json(body)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                 for e in exc.errors()[:5])
            return _answer(start_response, "400 Bad Request",
                           {"error": f"not an Alertmanager webhook payload: {problems}"})
        if notification.version != "4":
            return _answer(start_response, "400 Bad Request", {
                "error": f"payload version {notification.version!r}; meshbot reads version 4"})
        try:
            enqueued = api.submit_alert(self.redis, notification.model_dump(by_alias=True),
                                        notification.digest(), queue=self.queue)
        except QueueUnavailable as exc:
            log.warning("alert not accepted: %s", exc.message)
            # Alertmanager retries on 5xx: nothing is lost.
            return _answer(start_response, "503 Service Unavailable",
                           {"error": "meshbot's Redis is unreachable; retry"})
        return _answer(start_response, "200 OK",
                       {"status": "accepted" if enqueued else "duplicate"})
