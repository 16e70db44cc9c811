"""What reaches Bolt on ``POST /slack/events`` is the shape Slack sends; anything else is a 4xx.

Bolt parses a body before it checks the signature (to answer Slack's URL verification) and
trusts the payload's shape afterwards, so a malformed request — unsigned JSON that is not an
object, a body that is not UTF-8, a timestamp header that is not a number, a signed event whose
``event`` or ``item`` is not an object — would surface as an HTTP 500 with a traceback. This
guard answers those with 400/401 and a body over ``MAX_BODY`` with 413 before reading it, and
changes nothing. A request it lets through is handed on with its body intact.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote_plus

if TYPE_CHECKING:
    from wsgiref.types import WSGIEnvironment

# Slack's payloads are a few kilobytes (a slash command, an event, a block action); a quarter of
# a megabyte leaves room for the largest interactive payloads and no room for abuse.
MAX_BODY = 256 * 1024


@dataclass(frozen=True)
class Rejection:
    status: str
    reason: str


def check(environ: WSGIEnvironment) -> Rejection | None:
    """None when the request may go on to Bolt (``wsgi.input`` is then re-readable)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or "0")
    except ValueError:
        return Rejection("400 Bad Request", "Content-Length is not a number")
    if length > MAX_BODY:
        return Rejection("413 Content Too Large", f"body over {MAX_BODY} bytes")
    timestamp = str(environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", ""))
    # ASCII digits only: ``isdigit`` alone accepts "²" (a latin-1 header byte), which ``int``
    # then refuses inside the signature check — a 500 with a traceback.
    if not (timestamp.isascii() and timestamp.isdigit()):
        return Rejection("401 Unauthorized", "missing or malformed X-Slack-Request-Timestamp")
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Rejection("400 Bad Request", "body is not UTF-8")
    content_type = str(environ.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()
    # Bolt's parse_body reads JSON on either sign, whatever else the content type says.
    if content_type == "application/json" or text.startswith("{"):
        return _check_json(text)
    if _has_payload_field(text):  # interactivity: a form field holding JSON
        return _check_json(parse_qs(text, keep_blank_values=True)["payload"][0])
    return None


def _has_payload_field(form: str) -> bool:
    """Whether the form has a ``payload`` field, reading only the names: a slash command (the
    form the ack waits on) has none, and Bolt parses the whole form again anyway."""
    for field in form.split("&"):
        name = field.partition("=")[0]
        if name == "payload" or (("%" in name or "+" in name)
                                 and unquote_plus(name) == "payload"):
            return True
    return False


def _check_json(text: str) -> Rejection | None:
    try:
        payload: Any = json.loads(text)
    except ValueError:
        return Rejection("400 Bad Request", "body is not JSON")
    if not isinstance(payload, dict):
        return Rejection("400 Bad Request", "body is not a JSON object")
    if "event" in payload:
        event = payload["event"]
        if not isinstance(event, dict):
            return Rejection("400 Bad Request", "`event` is not an object")
        if "item" in event and not isinstance(event["item"], dict):
            return Rejection("400 Bad Request", "`event.item` is not an object")
    return None
