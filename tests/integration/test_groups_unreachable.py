"""A policy whose role is a Slack user group, and a Slack that cannot be asked about it: the
``/mesh`` command is still answered — HTTP 200, within Slack's 3 s, in words — and nothing is
queued (fail closed); a Slack that refuses the connection and one that never answers alike."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from bot.assembly import build_wsgi
from meshbot.settings import Settings
from playground.redis_server import free_port
from tests.fixtures.meshbot import CHANNEL, CONTRACT_POLICY, OPERATOR
from tests.fixtures.slack import SlackEnv
from tests.integration.test_fault_matrix import LIBRARY_TEXT
from tests.integration.test_slash_ack import call, command_form, environ

OPS_GROUP = "S0MESHOPS"


@pytest.fixture
def group_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The contract policy with its operators named only through a user group."""
    data = yaml.safe_load(CONTRACT_POLICY.read_text())
    data["roles"]["operators"] = [OPS_GROUP]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("MESHBOT_POLICY", str(path))
    return path


@pytest.fixture
def silent_slack() -> Iterator[str]:
    """A port that takes connections and never answers (nothing accepts them)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/api/"


def mesh_command(slack_env: SlackEnv, text: str) -> tuple[str, str, float]:
    """(HTTP status, the ack's text, seconds it took) for one /mesh command as served."""
    served = build_wsgi(Settings())
    started = time.monotonic()
    answer = call(served, environ(command_form(text), secret=slack_env.signing_secret))
    took = time.monotonic() - started
    return answer.status, json.loads(answer.body)["text"], took


def assert_nothing_queued(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.keys("rq:*") == [] and client.keys("meshbot:request:*") == []
    finally:
        client.close()


def test_the_group_grants_the_command_when_slack_answers(
        slack_env: SlackEnv, redis_url: str, group_policy: Path) -> None:
    slack_env.api.add_channel(CHANNEL, "mesh-ops")
    slack_env.api.set_usergroup(OPS_GROUP, [OPERATOR])
    status, text, _ = mesh_command(slack_env, "canary payment-service 10")
    assert status == "200 OK" and "Accepted" in text, text


@pytest.mark.parametrize("slack", ["refused", "silent"])
def test_a_slack_that_cannot_be_asked_is_a_clear_refusal_within_the_ack(
        slack_env: SlackEnv, redis_url: str, group_policy: Path, silent_slack: str,
        monkeypatch: pytest.MonkeyPatch, slack: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/api/" if slack == "refused" else silent_slack
    monkeypatch.setenv("SLACK_API_URL", url)
    status, text, took = mesh_command(slack_env, "canary payment-service 10")
    assert status == "200 OK", text
    assert took < 3.0, f"the ack took {took:.1f}s; Slack gives up after 3 s"
    assert text.startswith(":no_entry: Refused:"), text
    assert "Slack could not be asked about your user groups" in text
    assert f"<!subteam^{OPS_GROUP}>" in text
    assert not [t for t in LIBRARY_TEXT if t in text], text
    assert_nothing_queued(redis_url)


def test_a_refusal_for_another_reason_does_not_blame_slack(
        slack_env: SlackEnv, redis_url: str, group_policy: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused to the group's members too (canary is for approvers here): no note about Slack."""
    data = yaml.safe_load(group_policy.read_text())
    data["permissions"]["canary"] = ["approvers"]
    group_policy.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("SLACK_API_URL", f"http://127.0.0.1:{free_port()}/api/")
    status, text, _ = mesh_command(slack_env, "canary payment-service 10")
    assert status == "200 OK" and text.startswith(":no_entry: Refused:"), text
    assert "Slack could not be asked" not in text
    assert_nothing_queued(redis_url)
