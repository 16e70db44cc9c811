"""Redis (the queue and every store) down or hung when a command arrives: the caller is told,
within Slack's 3 s and with HTTP 200, that nothing was done; `/readyz` says not ready."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from playground.processes import ServeProcess
from playground.redis_server import free_port
from playground.slack_client import SlackSender, new_trigger_id
from tests.fixtures.far_side import loopback
from tests.fixtures.meshbot import CHANNEL, OPERATOR
from tests.fixtures.probes import readyz
from tests.fixtures.slack import SlackEnv

SLACK_DEADLINE_S = 3.0  # Slack shows the user an error when the ack takes longer


@pytest.fixture
def hung_redis() -> Iterator[str]:
    """A TCP listener that accepts connections and never answers: a Redis that hangs."""
    with loopback("hold") as port:
        yield f"redis://127.0.0.1:{port}/0"


def serve_env(slack_env: SlackEnv, policy_path: Path, redis_url: str,
              tmp_path: Path) -> dict[str, str]:
    return {
        "SLACK_API_URL": slack_env.api_url,
        "SLACK_BOT_TOKEN": slack_env.bot_token,
        "SLACK_SIGNING_SECRET": slack_env.signing_secret,
        "REDIS_URL": redis_url,
        "MESHBOT_POLICY": str(policy_path),
        "KUBECONFIG": str(tmp_path / "no-cluster-needed"),
    }


def ask(server: ServeProcess, slack_env: SlackEnv, text: str) -> tuple[int, str]:
    """A slash command as Slack sends it, with Slack's own patience: 3 s or the client fails."""
    response_url = slack_env.api.new_response_url(channel=CHANNEL, user=OPERATOR)
    with SlackSender(f"{server.url}/slack/events", slack_env.signing_secret,
                     timeout=SLACK_DEADLINE_S) as sender:
        reply = sender.slash_command(command="/mesh", text=text, user_id=OPERATOR,
                                     channel_id=CHANNEL, team_id="T0MESHBOT",
                                     trigger_id=new_trigger_id(), response_url=response_url,
                                     retry_num=None, timestamp=None)
    return reply.status, str(reply.json().get("text", ""))


@pytest.mark.parametrize("outage", ["refused", "hung"])
def test_a_command_during_a_redis_outage_is_answered_and_changes_nothing(
        outage: str, slack_env: SlackEnv, policy_path: Path, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    redis_url = (f"redis://127.0.0.1:{free_port()}/0" if outage == "refused"
                 else request.getfixturevalue("hung_redis"))
    env = serve_env(slack_env, policy_path, redis_url, tmp_path)
    with ServeProcess(env, tmp_path / "serve.log") as server:
        status, text = ask(server, slack_env, "canary payment-service 10")
        assert status == 200
        assert "cannot reach its queue" in text and "nothing was done" in text
        # Nothing was posted anywhere: the command was not taken.
        assert slack_env.api.calls("chat.postMessage") == []
        status, report = readyz(server.url, timeout=10)
        assert status == 503 and "redis" in json.dumps(report).lower()
        log = server.log()
    assert "Traceback" not in log

