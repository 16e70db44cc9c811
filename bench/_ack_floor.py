"""The least any ack of a slash command must do, served as ``meshbot serve`` is served.

    python -m bench._ack_floor --port P --workers W --threads T    (SLACK_SIGNING_SECRET, REDIS_URL)

``bench.ack_latency`` measures the ack against ``GET /healthz`` (the server's no-op) and against
this: the same gunicorn with the same options (``bot.server.gunicorn_options``), answering
``POST /slack/events`` after exactly the steps no ack can skip — meshbot's request guard, reading
the body, Slack's signature check (slack_sdk), parsing the form, and one Redis round trip (a PING,
through the client ``meshbot serve`` uses) — with a constant ephemeral text. What the ack costs
above it is meshbot's own work: the gate, the request, the submit script and its arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from slack_sdk.signature import SignatureVerifier

from bot import request_guard
from bot.server import Gunicorn, gunicorn_options
from meshbot.redis_client import connect

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

_ANSWER = json.dumps({"text": "floor", "response_type": "ephemeral"}).encode()


def floor_app(signing_secret: str, redis_url: str) -> WSGIApplication:
    verifier = SignatureVerifier(signing_secret)
    client = connect(redis_url, "serve")

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def respond(status: str, body: bytes) -> list[bytes]:
            start_response(status, [("content-type", "application/json;charset=utf-8"),
                                    ("content-length", str(len(body)))])
            return [body]

        if environ.get("REQUEST_METHOD") == "GET":
            return respond("200 OK", b'{"status": "ok"}')
        rejected = request_guard.check(environ)
        if rejected is not None:
            return respond(rejected.status, b"{}")
        raw: bytes = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or "0"))
        if not verifier.is_valid(raw, str(environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", "0")),
                                 str(environ.get("HTTP_X_SLACK_SIGNATURE", ""))):
            return respond("401 Unauthorized", b"{}")
        form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        if form.get("command") != "/mesh":
            return respond("400 Bad Request", b"{}")
        client.ping()
        return respond("200 OK", _ANSWER)

    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._ack_floor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args(argv)
    secret, url = os.environ["SLACK_SIGNING_SECRET"], os.environ["REDIS_URL"]
    options = gunicorn_options(host="127.0.0.1", port=args.port, workers=args.workers,
                               threads=args.threads)
    Gunicorn(options, lambda: floor_app(secret, url)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
