"""``/mesh`` over HTTP answered before Bolt's dispatch: the ack is the hot path of ``serve``.

Per request, Bolt builds its request, context, WebClient, middleware chain and listener
arguments — about a third of the CPU an ack costs. A slash command needs only three of those
steps, and this module does exactly those, so the caller sees what Bolt would have sent:

- the signature check Bolt's ``RequestVerification`` makes: slack_sdk's ``SignatureVerifier``
  with the same secret (a timestamp more than 5 minutes off, or a wrong or missing signature,
  gets Bolt's 401 ``{"error": "invalid request"}``);
- the same listener body, ``bot.app.answer_command``;
- Bolt's ack of an ephemeral text: the same JSON, content type and length.

Bolt's authorisation step is skipped: a command needs no bot identity, and Bolt's would make
the first command of each process wait on Slack's ``auth.test``. Anything that is not plainly
a ``/mesh`` command as Slack sends it (JSON, interactivity, URL verification, ``ssl_check``,
other commands, a body Bolt would parse another way) returns None and goes to Bolt, unread.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from slack_sdk.signature import SignatureVerifier

from bot.app import MESH_COMMAND, BotContext, answer_command

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

log = logging.getLogger("meshbot.bot")

# Bolt's BoltResponse picks this content type for a body that is a JSON object.
_JSON = "application/json;charset=utf-8"
_TEXT = "text/plain;charset=utf-8"
_INVALID = json.dumps({"error": "invalid request"}).encode()  # RequestVerification's body
# Form fields that make Bolt treat a form as something other than a plain command (an SSL
# check, a URL verification, an event): those requests go to Bolt.
_NOT_A_PLAIN_COMMAND = ("ssl_check", "type", "event")


class SlashAck:
    """A WSGI handler for ``POST /slack/events`` that answers ``/mesh`` commands itself and
    returns None (having read nothing it does not put back) for every other request."""

    def __init__(self, ctx: BotContext, signing_secret: str) -> None:
        self.ctx = ctx
        # An empty secret: Bolt fails each request with 500; leave them all to it.
        self.verifier = SignatureVerifier(signing_secret) if signing_secret.strip() else None

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes] | None:
        if self.verifier is None:
            return None
        stream = environ["wsgi.input"]
        raw: bytes = stream.read(int(environ.get("CONTENT_LENGTH") or "0"))
        form = _command_form(raw, environ.get("CONTENT_TYPE"))
        if form is None:
            environ["wsgi.input"] = io.BytesIO(raw)  # Bolt reads the body afresh
            return None
        # Bolt reads the same two headers, with the same defaults.
        timestamp = str(environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", "0"))
        signature = str(environ.get("HTTP_X_SLACK_SIGNATURE", ""))
        if not self.verifier.is_valid(raw, timestamp, signature):
            log.info("slash command refused: invalid or stale signature (timestamp %s)",
                     timestamp)
            return _respond(start_response, "401 Unauthorized", _INVALID, _JSON)
        try:
            text = answer_command(self.ctx, form)
        except Exception:
            # What Bolt does when a listener raises: log it, answer 500 with an empty body.
            log.exception("Failed to run the /mesh command")
            return _respond(start_response, "500 Internal Server Error", b"", _TEXT)
        # Bolt's ``ack(response_type="ephemeral", text=...)``, byte for byte.
        body = json.dumps({"text": text, "response_type": "ephemeral"}).encode()
        return _respond(start_response, "200 OK", body, _JSON)


def _command_form(raw: bytes, content_type: str | None) -> dict[str, Any] | None:
    """The form of a ``/mesh`` command, parsed as Bolt parses it; None for anything else.

    Bolt's ``parse_body`` reads JSON when the content type (before any ``;``) is exactly
    ``application/json`` or the body starts with ``{``: those stay Bolt's, as do empty bodies
    and interactivity (a ``payload`` field). Bolt also takes a form holding the word
    ``payload`` anywhere — `/mesh status payload-service` — for interactivity and answers 404;
    a form with no such field is a command here, whatever its text says."""
    if not raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # request_guard refuses these first; never guess
        return None
    if (content_type or "").split(";")[0] == "application/json" or text.startswith("{"):
        return None
    form: dict[str, Any] = dict(parse_qsl(text, keep_blank_values=True))
    if form.get("command") != MESH_COMMAND or "payload" in form \
            or any(k in form for k in _NOT_A_PLAIN_COMMAND):
        return None
    return form


def _respond(start_response: StartResponse, status: str, body: bytes,
             content_type: str) -> list[bytes]:
    # Bolt's WSGI adapter sends exactly these two headers, lower-case.
    start_response(status, [("content-type", content_type), ("content-length", str(len(body)))])
    return [body]
