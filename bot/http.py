"""The WSGI application ``meshbot serve`` runs: Slack events, health, readiness and metrics.

Routing is by exact path; on ``/slack/events``, ``/mesh`` slash commands are answered by
``bot.slash_ack`` and everything else by Bolt's own WSGI adapter (both verify Slack's signature:
a bad or stale one gets 401).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import redis
from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot import request_guard
from jobs.runtime import api
from meshbot import metrics
from meshbot.health_server import readiness

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

Handler = Callable[["WSGIEnvironment", "StartResponse"], Iterable[bytes]]
# A handler that may decline a request (None: it goes on to the next one).
MaybeHandler = Callable[["WSGIEnvironment", "StartResponse"], Iterable[bytes] | None]


def _respond(start_response: StartResponse, status: str, body: bytes,
             content_type: str = "application/json") -> list[bytes]:
    start_response(status, [("Content-Type", content_type),
                            ("Content-Length", str(len(body)))])
    return [body]


class MeshbotWSGI:
    def __init__(self, slack: SlackRequestHandler, redis_client: redis.Redis,
                 extra: dict[tuple[str, str], Handler] | None = None,
                 queue: str = "meshbot", commands: MaybeHandler | None = None) -> None:
        self.slack = slack
        self.commands = commands
        self.redis = redis_client
        self.queue = queue
        self.extra = extra or {}

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        if path == "/slack/events" and method == "POST":
            rejected = request_guard.check(environ)
            if rejected is not None:
                body = json.dumps({"error": rejected.reason}).encode()
                return _respond(start_response, rejected.status, body)
            if self.commands is not None:
                answered = self.commands(environ, start_response)
                if answered is not None:
                    return answered
            return self.slack(environ, start_response)
        if path == "/healthz" and method == "GET":
            return _respond(start_response, "200 OK", b'{"status": "ok"}')
        if path == "/readyz" and method == "GET":
            return self.readyz(start_response)
        if path == "/metrics" and method == "GET":
            body, content_type = metrics.render(lambda: api.read_state(self.redis, self.queue))
            return _respond(start_response, "200 OK", body, content_type)
        handler = self.extra.get((method, path))
        if handler is not None:
            return handler(environ, start_response)
        return _respond(start_response, "404 Not Found", b'{"error": "not found"}')

    def readyz(self, start_response: StartResponse) -> list[bytes]:
        ready, report = readiness(self.redis)
        status = "200 OK" if ready else "503 Service Unavailable"
        return _respond(start_response, status, json.dumps(report).encode())
