"""A Slack Web API stand-in on loopback that a real ``slack_sdk.WebClient`` talks to.

    with SlackApiStandIn() as slack:
        client = WebClient(token="xoxb-test", base_url=slack.base_url)
        client.chat_postMessage(channel="C0MESHOPS", text="hello")
        slack.wait_for_message("C0MESHOPS", lambda m: m.text == "hello")

It answers like Slack at the wire (HTTP 200 with ``{"ok": false, "error": ...}``; 429 with
``Retry-After``), so meshbot's adapters are exercised for real instead of being patched. It also
serves ``response_url`` endpoints (``POST /response/<token>``) for slash-command replies.
Everything it knows is the ``SlackWorkspace`` it inherits: calls, messages, threads, responses.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from playground.slack_methods import METHODS
from playground.slack_model import Call, JSONDict, ResponsePost, SlackMethodError
from playground.slack_workspace import Fault, SlackWorkspace

RESPONSE_URL_USES = 5  # Slack accepts up to five posts to one response_url
OPEN_CONNECTION = "apps.connections.open"  # the one method that takes an app-level token


class _Server(ThreadingHTTPServer):
    # Non-daemon handler threads are joined by server_close(); stop() first shuts their
    # sockets so a client holding a keep-alive connection cannot make stop() hang.
    daemon_threads = False

    def __init__(self, stand_in: SlackApiStandIn) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stand_in = stand_in
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for clients that reuse connections
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle plus the client's
    # delayed ACK can add ~40 ms to every call and distort timings measured through it.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.sockets_lock:
            self.server.open_sockets.add(self.connection)

    def finish(self) -> None:
        with self.server.sockets_lock:
            self.server.open_sockets.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read calls(), not an access log on stderr

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        params: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        stand_in = self.server.stand_in
        if parts.path.startswith("/response/"):
            status, text = stand_in.receive_response(parts.path.removeprefix("/response/"), raw)
            self._send(status, text.encode(), "text/plain; charset=utf-8")
            return
        if parts.path.startswith("/upload/"):  # a file's bytes, to the URL it was given
            stored = stand_in.receive_file(parts.path.removeprefix("/upload/"), raw)
            self._send(200 if stored else 404, b"OK" if stored else b"not found",
                       "text/plain; charset=utf-8")
            return
        if not parts.path.startswith("/api/"):
            self._send(404, b"not found", "text/plain; charset=utf-8")
            return
        content_type = self.headers.get("Content-Type", "")
        try:
            if raw and "json" in content_type:
                body = json.loads(raw)
                params.update(body if isinstance(body, dict) else {})
            elif raw:
                params.update(parse_qsl(raw.decode(), keep_blank_values=True))
        except ValueError:
            params["_unparsed_body"] = raw.decode(errors="replace")
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, answer = stand_in.answer(parts.path.removeprefix("/api/"), params, headers)
        payload = json.dumps(answer).encode()
        self._send(status, payload, "application/json; charset=utf-8", extra)

    def _send(
        self, status: int, payload: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class SlackApiStandIn(SlackWorkspace):
    """A workspace reachable over HTTP; a context manager that starts and stops the server."""

    def __init__(self, **workspace: Any) -> None:
        super().__init__(**workspace)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._response_urls: dict[str, tuple[str | None, str | None, int]] = {}
        self._socket_mode: Callable[[], str] | None = None
        self._thread_faults: dict[tuple[str, str, str], list[Fault]] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is None:
            self._server = _Server(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},  # stop() returns within one poll
                name="slack-api-stand-in",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        with server.sockets_lock:
            for sock in list(server.open_sockets):
                with contextlib.suppress(OSError):  # already closed by the peer
                    sock.shutdown(socket.SHUT_RDWR)
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/`` — the server's root."""
        if self._server is None:
            raise RuntimeError("the Slack stand-in is not running; use it as a context manager")
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    @property
    def base_url(self) -> str:
        """What ``WebClient(base_url=...)`` and ``SLACK_API_URL`` take (ends with ``/``)."""
        return self.url + "api/"

    def upload_url(self, file_id: str) -> str:
        return f"{self.url}upload/{file_id}"

    # -- response_url ------------------------------------------------------------------------

    def new_response_url(self, *, channel: str | None = None, user: str | None = None) -> str:
        """A fresh ``response_url``; ``in_channel`` replies to it are posted to ``channel``."""
        token = secrets.token_urlsafe(12)
        with self.transaction():
            self._response_urls[token] = (channel, user, 0)
        return f"{self.url}response/{token}"

    def receive_response(self, token: str, raw: bytes) -> tuple[int, str]:
        with self.transaction():
            if token not in self._response_urls:
                return 404, "expired_url"
            channel, user, used = self._response_urls[token]
            if used >= RESPONSE_URL_USES:
                return 404, "used_url"
            try:
                body = json.loads(raw)
            except ValueError:
                return 400, "invalid_payload"
            if not isinstance(body, dict):
                return 400, "invalid_payload"
            if not body.get("text") and not body.get("blocks"):
                return 400, "no_text"
            self._response_urls[token] = (channel, user, used + 1)
            url = f"{self.url}response/{token}"
            self.add_response(ResponsePost(token, url, body, time.time(), channel, user))
            if body.get("response_type") == "in_channel" and channel is not None:
                self.post(channel, str(body.get("text", "")), user=None)
            return 200, "ok"

    # -- faults of one thread ----------------------------------------------------------------

    def fail_in_thread(self, channel: str, thread_ts: str, error: str = "fatal_error", *,
                       times: int = 1, status: int = 500,
                       method: str = "chat.postMessage") -> None:
        """Answer the next ``times`` calls of ``method`` into one thread (``thread_ts`` "": the
        channel's own messages) with ``error``; calls into other threads are served."""
        with self.transaction():
            self._thread_faults.setdefault((method, channel, thread_ts), []).extend(
                [Fault(status, error)] * times)

    def _take_thread_fault(self, method: str, params: dict[str, Any]) -> Fault | None:
        where = (method, str(params.get("channel") or ""), str(params.get("thread_ts") or ""))
        with self.transaction():
            queue = self._thread_faults.get(where)
            return queue.pop(0) if queue else None

    # -- Socket Mode -------------------------------------------------------------------------

    def attach_socket_mode(self, issue_url: Callable[[], str]) -> None:
        """Answer ``apps.connections.open`` with ``issue_url()`` (a Socket Mode server's)."""
        self._socket_mode = issue_url

    # -- the Web API -------------------------------------------------------------------------

    def answer(
        self, method: str, params: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, str], JSONDict]:
        """Serve one Web API call: (HTTP status, extra headers, JSON body); always recorded."""
        arrived = time.time()
        status, extra, answer = self._serve(method, params, headers)
        shown = {k: v for k, v in params.items() if k != "token"}
        self.record(Call(method, shown, headers, arrived, status, answer))
        return status, extra, answer

    def _serve(
        self, method: str, params: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, str], JSONDict]:
        auth = headers.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        token = token or str(params.get("token") or "")
        if not token:
            return 200, {}, {"ok": False, "error": "not_authed"}
        wanted = "xapp-" if method == OPEN_CONNECTION else "xoxb-"
        if not token.startswith(wanted):
            wrong_type = token.startswith(("xoxb-", "xapp-"))
            error = "not_allowed_token_type" if wrong_type else "invalid_auth"
            return 200, {}, {"ok": False, "error": error}
        fault = self._take_thread_fault(method, params) or self.take_fault(method)
        if fault is not None and fault.after_serving:
            self._serve_method(method, params)  # done, whatever the caller is told next
        if fault is not None:
            extra = {}
            if fault.retry_after is not None:
                # Slack sends whole seconds; a fraction is allowed here to keep tests fast.
                seconds = fault.retry_after
                whole = seconds == int(seconds)
                extra["Retry-After"] = str(int(seconds)) if whole else str(seconds)
            return fault.status, extra, {"ok": False, "error": fault.error}
        if method == OPEN_CONNECTION:
            if self._socket_mode is None:  # the stand-in's name: no server was attached
                return 200, {}, {"ok": False, "error": "socket_mode_not_enabled"}
            return 200, {}, {"ok": True, "url": self._socket_mode()}
        return self._serve_method(method, params)

    def _serve_method(self, method: str, params: dict[str, Any]
                      ) -> tuple[int, dict[str, str], JSONDict]:
        handler = METHODS.get(method)
        if handler is None:
            return 200, {}, {"ok": False, "error": "unknown_method"}
        try:
            with self.transaction():
                return 200, {}, {"ok": True, **handler(self, params)}
        except SlackMethodError as exc:
            return 200, {}, {"ok": False, "error": exc.error, **exc.extra}
        except Exception as exc:  # a stand-in bug must surface in the test, not hang it
            return 500, {}, {"ok": False, "error": "fatal_error", "detail": repr(exc)}
