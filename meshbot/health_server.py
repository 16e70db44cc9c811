"""Readiness, and the small HTTP server ``meshbot worker`` and ``meshbot socket`` keep for
``GET /healthz``, ``GET /readyz`` and ``GET /metrics`` (the chart's probes and scrapes).

Exact paths, 404 for anything else: a probe pointed at a wrong path must fail, not pass.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import redis

from meshbot import metrics
from meshbot.redis_client import connect
from meshbot.settings import Settings
from meshbot.state_epoch import lost_since

log = logging.getLogger("meshbot.health")

AOF_OFF = ("Redis persistence (AOF) is off: approvals, audit and backups would not survive a "
           "Redis restart")


def readiness(client: redis.Redis) -> tuple[bool, dict[str, str]]:
    """Ready while Redis answers; a Redis without AOF is ready but warned about."""
    report: dict[str, str] = {}
    try:
        client.ping()
        info = client.info("persistence")
    except redis.RedisError as exc:
        report["redis"] = f"unreachable: {exc}"
        return False, report
    report["redis"] = "ok"
    if not int(info.get("aof_enabled", 0)):
        report["warning"] = AOF_OFF
    try:
        lost = lost_since(client)
    except redis.RedisError:
        lost = None
    if lost is not None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(lost))
        report["state"] = (f"Redis lost meshbot's state at {stamp}: rollouts, approvals, locks "
                           "and audit entries from before are gone; check the mesh")
    return True, report


class HealthServer:
    """A threaded HTTP server on its own port, in a daemon thread beside the real work."""

    def __init__(self, client: redis.Redis, *, host: str = "0.0.0.0", port: int = 9100,
                 read_state: metrics.StateReader | None = None,
                 ready_checks: Mapping[str, Callable[[], bool]] | None = None) -> None:
        self.client = client
        self.read_state = read_state
        # More conditions for /readyz beside Redis, e.g. Socket Mode's connection to Slack.
        self.ready_checks = dict(ready_checks or {})
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="meshbot-health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("health and metrics on port %d", self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def answer(self, path: str) -> tuple[int, bytes, str]:
        """Status, body and content type for GET ``path``."""
        if path == "/healthz":
            return 200, b'{"status": "ok"}', "application/json"
        if path == "/readyz":
            ready, report = readiness(self.client)
            for name, check in self.ready_checks.items():
                ok = check()
                report[name] = "ok" if ok else "not ready"
                ready = ready and ok
            return (200 if ready else 503), json.dumps(report).encode(), "application/json"
        if path == "/metrics":
            body, content_type = metrics.render(self.read_state)
            return 200, body, content_type
        return 404, b'{"error": "not found"}', "application/json"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body, content_type = owner.answer(self.path.split("?", 1)[0])
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes every few seconds would drown the real log lines

        return Handler


def start_health_server(settings: Settings, port: int,
                        read_state: Callable[[redis.Redis, str], metrics.StateSample | None],
                        host: str = "0.0.0.0",
                        ready_checks: Mapping[str, Callable[[], bool]] | None = None,
                        ) -> HealthServer:
    """Serve health and metrics with a Redis client of its own, with short timeouts: a probe
    must answer within its own timeout even while Redis hangs."""
    client = connect(settings.redis_url, "health")
    return HealthServer(client, host=host, port=port,
                        read_state=lambda: read_state(client, settings.queue_name),
                        ready_checks=ready_checks).start()
