"""``meshbot socket`` over a real WebSocket: the stand-in hands out a Socket Mode URL through
``apps.connections.open``, the real process connects with slack_sdk's built-in client, and
slash commands arrive as envelopes whose acks carry the reply, as Slack delivers them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from jobs.adapters.audit import AuditLog
from playground.processes import MeshbotProcess, wait_http_ok
from playground.redis_server import free_port
from playground.slack_client import DEFAULT_APP_ID, DEFAULT_TEAM_ID, new_trigger_id
from playground.socket_mode_server import Ack, SocketModeServer
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh, assert_canary_thread

APP_TOKEN = "xapp-1-A0MESHBOT-1-playground"
GROUP, VERSION, NS = "networking.istio.io", "v1beta1", "production"
STARTUP = 30.0  # seconds: a cold Python start of the whole app, on a loaded CI runner


@dataclass
class SocketBot:
    sockets: SocketModeServer
    process: MeshbotProcess
    metrics_port: int


@pytest.fixture
def socket_bot(mesh: Mesh, tmp_path: Path) -> Iterator[SocketBot]:
    with SocketModeServer(app_id=DEFAULT_APP_ID) as sockets:
        mesh.slack.attach_socket_mode(sockets.issue_url)
        port = free_port()
        env = {**mesh.env, "SLACK_APP_TOKEN": APP_TOKEN}
        process = MeshbotProcess(["socket", "--metrics-port", str(port)], env,
                                 tmp_path / "socket.log")
        with process:
            try:
                sockets.wait_until_connected(STARTUP)
                wait_http_ok("127.0.0.1", port, "/readyz", STARTUP, process.process)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"meshbot socket did not connect:\n{process.log()}") from exc
            yield SocketBot(sockets, process, port)
        print(process.log())  # shown by pytest only when the test failed


def slash(mesh: Mesh, bot: SocketBot, text: str, user: str = OPERATOR) -> Ack:
    """One ``/mesh`` slash command as a Socket Mode envelope, shaped like Slack's; its ack."""
    payload: dict[str, Any] = {
        "token": "deprecated-verification-token",
        "team_id": DEFAULT_TEAM_ID,
        "team_domain": "meshbot-playground",
        "channel_id": CHANNEL,
        "channel_name": "mesh-ops",
        "user_id": user,
        "user_name": user.lower(),
        "command": "/mesh",
        "text": text,
        "api_app_id": DEFAULT_APP_ID,
        "is_enterprise_install": "false",
        "response_url": mesh.slack.new_response_url(channel=CHANNEL, user=user),
        "trigger_id": new_trigger_id(),
    }
    envelope_id = bot.sockets.send_envelope("slash_commands", payload)
    return bot.sockets.wait_for_ack(envelope_id, 5.0)


def test_stand_in_hands_out_socket_urls_only_for_app_tokens(mesh: Mesh,
                                                            socket_bot: SocketBot) -> None:
    opened = mesh.slack.calls("apps.connections.open")
    assert opened and opened[-1].ok
    assert str(opened[-1].response["url"]).startswith("ws://127.0.0.1:")
    # The bot token cannot open a connection, and the app token cannot post.
    bot = WebClient(token=mesh.env["SLACK_BOT_TOKEN"], base_url=mesh.slack.base_url)
    with pytest.raises(SlackApiError) as refused:
        bot.apps_connections_open(app_token=mesh.env["SLACK_BOT_TOKEN"])
    assert refused.value.response["error"] == "not_allowed_token_type"
    app = WebClient(token=APP_TOKEN, base_url=mesh.slack.base_url)
    with pytest.raises(SlackApiError) as refused:
        app.chat_postMessage(channel=CHANNEL, text="posted with the app token")
    assert refused.value.response["error"] == "not_allowed_token_type"
    assert mesh.slack.messages(CHANNEL) == []


def test_canary_over_socket_mode(mesh: Mesh, socket_bot: SocketBot) -> None:
    ack = slash(mesh, socket_bot, "canary payment-service 10")

    assert ack.payload is not None
    assert ack.payload.get("response_type") == "ephemeral"
    assert "Accepted" in str(ack.payload.get("text"))
    assert mesh.weights("payment-service") == {"stable": 100, "canary": 0}  # queued, not run

    mesh.run_jobs()

    assert mesh.weights("payment-service") == {"stable": 90, "canary": 10}
    assert_canary_thread(mesh)
    assert socket_bot.sockets.connected  # one session served it all, no reconnect
    assert socket_bot.sockets.connections_opened == 1


def test_unknown_service_is_refused_in_the_ack(mesh: Mesh, socket_bot: SocketBot) -> None:
    before = mesh.cluster.get(GROUP, VERSION, "virtualservices", NS, "payment-service")

    ack = slash(mesh, socket_bot, "canary billing-service 10")

    assert ack.payload is not None
    text = str(ack.payload.get("text", ""))
    assert text.startswith(":no_entry: Refused:"), text
    assert "unknown service billing-service" in text
    mesh.run_jobs()
    after = mesh.cluster.get(GROUP, VERSION, "virtualservices", NS, "payment-service")
    assert after == before  # same resourceVersion: never written
    assert mesh.slack.calls("chat.postMessage") == []
    assert mesh.slack.messages(CHANNEL) == []
    entry = AuditLog(mesh.redis).last(None, 1)[0]
    assert (entry.outcome, entry.actor, entry.target) == ("refused", OPERATOR, "billing-service")
