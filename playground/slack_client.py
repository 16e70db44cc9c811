"""What Slack itself sends to meshbot: signed slash commands and Events API callbacks.

Requests are built and signed exactly as Slack builds them, then sent over real HTTP to the
running server, so meshbot's signature check, parsing and ack path are all exercised.
``SlackSender`` can keep one HTTP connection open across requests: benchmarks of ack latency
then measure meshbot, not TCP connection set-up.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import secrets
import time
from types import TracebackType
from typing import Any, NamedTuple, Self
from urllib.parse import urlencode, urlsplit

DEFAULT_TEAM_ID = "T0MESH"
DEFAULT_APP_ID = "A0MESHBOT"
DEFAULT_BOT_USER_ID = "U0MESHBOT"
# Slack still sends the deprecated verification token; meshbot must not rely on it.
VERIFICATION_TOKEN = "deprecated-verification-token"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """Slack's v0 signature: ``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


class SlackReply(NamedTuple):
    """meshbot's answer to one request; ``elapsed`` is seconds from send to full body read."""

    status: int
    body: str
    elapsed: float

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def new_trigger_id() -> str:
    return f"{int(time.time())}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"


def reaction_event(
    kind: str, *, user: str, reaction: str, channel: str, ts: str, item_user: str = ""
) -> dict[str, Any]:
    """A ``reaction_added`` / ``reaction_removed`` event body, as Slack shapes it."""
    if kind not in ("reaction_added", "reaction_removed"):
        raise ValueError(f"not a reaction event: {kind}")
    return {
        "type": kind,
        "user": user,
        "reaction": reaction,
        "item_user": item_user or DEFAULT_BOT_USER_ID,
        "item": {"type": "message", "channel": channel, "ts": ts},
        "event_ts": f"{time.time():.6f}",
    }


class SlackSender:
    """Sends signed requests to one meshbot URL, optionally over one persistent connection."""

    def __init__(self, url: str, secret: str, *, persistent: bool = False, timeout: float = 10.0):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected an http:// URL, got {url!r}")
        self.url, self.secret, self.persistent, self.timeout = url, secret, persistent, timeout
        self._host, self._port = parts.hostname, parts.port or 80
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._conn: http.client.HTTPConnection | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def post(
        self,
        body: bytes,
        content_type: str,
        *,
        timestamp: int | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
    ) -> SlackReply:
        """Sign ``body`` and POST it; the timestamp defaults to now (Slack rejects > 5 min)."""
        ts = int(time.time()) if timestamp is None else timestamp
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": sign(self.secret, body, ts),
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        if not self.persistent:
            headers["Connection"] = "close"
        reused = self._conn is not None
        started = time.perf_counter()
        try:
            response = self._send(body, headers)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            if not reused:
                raise
            # The server closed our idle kept-alive connection before reading the request;
            # one attempt on a fresh connection is what any HTTP client does here.
            self.close()
            started = time.perf_counter()
            response = self._send(body, headers)
        payload = response.read().decode("utf-8", errors="replace")
        elapsed = time.perf_counter() - started
        if not self.persistent or response.will_close:
            self.close()
        return SlackReply(response.status, payload, elapsed)

    def _send(self, body: bytes, headers: dict[str, str]) -> http.client.HTTPResponse:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        self._conn.request("POST", self._path, body=body, headers=headers)
        return self._conn.getresponse()

    def slash_command(
        self,
        *,
        text: str,
        user_id: str,
        channel_id: str,
        response_url: str,
        command: str = "/mesh",
        team_id: str = DEFAULT_TEAM_ID,
        trigger_id: str | None = None,
        user_name: str | None = None,
        channel_name: str | None = None,
        team_domain: str = "meshbot-playground",
        api_app_id: str = DEFAULT_APP_ID,
        retry_num: int | None = None,
        timestamp: int | None = None,
    ) -> SlackReply:
        """POST a slash command as Slack does: form-encoded, fields in Slack's order."""
        form = {
            "token": VERIFICATION_TOKEN,
            "team_id": team_id,
            "team_domain": team_domain,
            "channel_id": channel_id,
            "channel_name": channel_name or channel_id.lower(),
            "user_id": user_id,
            "user_name": user_name or user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": api_app_id,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id or new_trigger_id(),
        }
        return self.post(
            urlencode(form).encode(),
            "application/x-www-form-urlencoded",
            timestamp=timestamp,
            retry_num=retry_num,
        )

    def event(
        self,
        event: dict[str, Any],
        event_id: str,
        *,
        team_id: str = DEFAULT_TEAM_ID,
        api_app_id: str = DEFAULT_APP_ID,
        bot_user_id: str = DEFAULT_BOT_USER_ID,
        event_time: int | None = None,
        retry_num: int | None = None,
        timestamp: int | None = None,
    ) -> SlackReply:
        """POST an Events API ``event_callback`` envelope around ``event`` (JSON)."""
        envelope = {
            "token": VERIFICATION_TOKEN,
            "team_id": team_id,
            "api_app_id": api_app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()) if event_time is None else event_time,
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": team_id,
                    "user_id": bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }
        return self.post(
            json.dumps(envelope).encode(),
            "application/json",
            timestamp=timestamp,
            retry_num=retry_num,
        )


def send_slash_command(
    url: str,
    secret: str,
    *,
    command: str = "/mesh",
    text: str,
    user_id: str,
    channel_id: str,
    team_id: str = DEFAULT_TEAM_ID,
    trigger_id: str | None = None,
    response_url: str,
    retry_num: int | None = None,
    timestamp: int | None = None,
) -> SlackReply:
    """One signed slash command on a fresh connection; ``(status, body, elapsed)``."""
    with SlackSender(url, secret) as sender:
        return sender.slash_command(
            command=command,
            text=text,
            user_id=user_id,
            channel_id=channel_id,
            team_id=team_id,
            trigger_id=trigger_id,
            response_url=response_url,
            retry_num=retry_num,
            timestamp=timestamp,
        )


def send_event(
    url: str,
    secret: str,
    event: dict[str, Any],
    event_id: str,
    *,
    team_id: str = DEFAULT_TEAM_ID,
    retry_num: int | None = None,
    timestamp: int | None = None,
) -> SlackReply:
    """One signed Events API callback on a fresh connection; ``(status, body, elapsed)``."""
    with SlackSender(url, secret) as sender:
        return sender.event(
            event, event_id, team_id=team_id, retry_num=retry_num, timestamp=timestamp
        )
