"""The request guard checks an interactive payload's JSON, however its field name is encoded,
and leaves a slash command's form to Bolt (which parses it anyway) instead of parsing it twice."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlencode

import pytest

from bot import request_guard


def environ(body: bytes) -> dict[str, Any]:
    return {"CONTENT_TYPE": "application/x-www-form-urlencoded",
            "CONTENT_LENGTH": str(len(body)), "HTTP_X_SLACK_REQUEST_TIMESTAMP": "1700000000",
            "wsgi.input": io.BytesIO(body)}


SLASH = urlencode({"command": "/mesh", "text": "canary payment-service 10",
                   "response_url": "https://hooks.slack.com/commands/T0/1/x",
                   "trigger_id": "1.2.abc"}).encode()


def test_a_slash_command_form_is_not_parsed_here(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse_qs(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the guard parsed the whole form")

    monkeypatch.setattr(request_guard, "parse_qs", parse_qs)
    env = environ(SLASH)
    assert request_guard.check(env) is None
    assert env["wsgi.input"].read() == SLASH  # handed on intact


@pytest.mark.parametrize("name", ["payload", "p%61yload", "pay%6Coad"])
def test_an_interactive_payload_that_is_not_json_is_refused(name: str) -> None:
    rejected = request_guard.check(environ(f"{name}=not-json".encode()))
    assert rejected is not None and rejected.status.startswith("400")


def test_an_interactive_payload_that_is_an_object_goes_on() -> None:
    body = urlencode({"payload": '{"type": "block_actions"}'}).encode()
    assert request_guard.check(environ(body)) is None


@pytest.mark.parametrize("timestamp", ["\u00b2", "1700000000\u00b9", "", "17e8", "-1"])
def test_a_timestamp_that_is_not_ascii_digits_is_refused(timestamp: str) -> None:
    """WSGI headers are latin-1: "²" passes ``str.isdigit`` but not ``int`` (which Slack's
    signature check calls), so it must be refused here, as "abc" is."""
    env = {**environ(SLASH), "HTTP_X_SLACK_REQUEST_TIMESTAMP": timestamp}
    rejected = request_guard.check(env)
    assert rejected is not None and rejected.status.startswith("401")
