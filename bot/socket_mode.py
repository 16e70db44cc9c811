"""``meshbot socket``: Socket Mode, for teams without a public URL.

Slack delivers commands and events over an outbound WebSocket (slack_sdk's built-in client, no
extra dependency) to the very app ``meshbot serve`` runs (``bot.assembly``). There is no
``/slack/events`` and no ``/alertmanager`` here; a small HTTP port keeps ``/healthz``,
``/readyz`` (Redis reachable and the WebSocket connected) and ``/metrics`` for the chart.
"""

from __future__ import annotations

import logging

from slack_bolt.adapter.socket_mode import SocketModeHandler

from bot.assembly import build_app
from jobs.runtime import api
from meshbot.health_server import start_health_server
from meshbot.logs import configure_logging
from meshbot.settings import Settings

log = logging.getLogger("meshbot.socket")

APP_TOKEN_PREFIX = "xapp-"


class MissingAppToken(SystemExit):
    """Startup refused: Socket Mode cannot connect without an app-level token."""


def app_token(settings: Settings) -> str:
    token = settings.slack_app_token.get_secret_value()
    if not token:
        raise MissingAppToken(
            "meshbot socket: SLACK_APP_TOKEN is not set. Socket Mode needs an app-level token "
            "(xapp-…) with the connections:write scope: Slack app settings → Basic Information "
            "→ App-Level Tokens. Or run `meshbot serve` (HTTP mode) instead."
        )
    if not token.startswith(APP_TOKEN_PREFIX):
        raise MissingAppToken(
            "meshbot socket: SLACK_APP_TOKEN is not an app-level token (it must start with "
            "xapp-; xoxb- is the bot token, which goes in SLACK_BOT_TOKEN)."
        )
    return token


def build_handler(settings: Settings) -> SocketModeHandler:
    """The Bolt app of HTTP mode behind a Socket Mode connection (not connected yet)."""
    token = app_token(settings)  # before anything else: a missing token is the likely mistake
    app, _ctx = build_app(settings)
    return SocketModeHandler(app, app_token=token)


def run_socket_mode(*, metrics_port: int) -> None:
    settings = Settings()
    configure_logging()
    handler = build_handler(settings)
    # Health first: the startup probe answers while the WebSocket is still connecting.
    start_health_server(settings, metrics_port, api.read_state,
                        ready_checks={"slack": handler.client.is_connected})
    log.info("connecting to Slack over Socket Mode")
    handler.start()  # type: ignore[no-untyped-call]  # blocks; reconnects on its own
