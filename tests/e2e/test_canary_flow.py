"""The whole path over real wires: a signed slash command to `meshbot serve`, a worker, the
real kube-apiserver (meshbot as its own identity, under the chart's RBAC) and the Slack
stand-in."""

from __future__ import annotations

import time

from jobs.adapters.rollout_store import RolloutStore
from playground.processes import ServeProcess
from playground.slack_client import send_slash_command
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh, assert_canary_thread


def slash(mesh: Mesh, server: ServeProcess, text: str, user: str = OPERATOR,
          channel: str = CHANNEL) -> tuple[int, str, str]:
    response_url = mesh.slack.new_response_url(channel=channel, user=user)
    reply = send_slash_command(f"{server.url}/slack/events", mesh.signing_secret, text=text,
                               user_id=user, channel_id=channel, response_url=response_url)
    return reply.status, reply.body, response_url


def test_canary_then_rollback_over_http(mesh: Mesh, server: ServeProcess) -> None:
    status, body, _ = slash(mesh, server, "canary payment-service 10")
    assert status == 200
    assert "Accepted" in body
    assert mesh.weights("payment-service") == {"stable": 100, "canary": 0}  # not yet: queued

    mesh.run_jobs()

    assert mesh.weights("payment-service") == {"stable": 90, "canary": 10}
    root_ts = assert_canary_thread(mesh)

    status, _, _ = slash(mesh, server, "rollback payment-service")
    assert status == 200
    mesh.run_jobs()

    assert mesh.weights("payment-service") == {"stable": 100, "canary": 0}
    thread = mesh.slack.thread(CHANNEL, root_ts)
    assert "Rolled back" in thread[-1].text and "stable 100 / canary 0" in thread[-1].text
    # Both writers finished their writes: nothing is left for the ticker to re-apply.
    assert RolloutStore(mesh.redis).unapplied_since(time.time() + 1) == []


def test_status_shows_weights_and_rollout(mesh: Mesh, server: ServeProcess) -> None:
    slash(mesh, server, "canary user-service 25")
    mesh.run_jobs()
    status, _, _ = slash(mesh, server, "status user-service")
    assert status == 200
    mesh.run_jobs()
    message = mesh.slack.roots(CHANNEL)[-1]
    assert "user-service" in message.text
    assert "stable 75 / canary 25" in message.text
    assert "progressing" in message.text


def test_help_lists_only_what_the_caller_may_run(mesh: Mesh, server: ServeProcess) -> None:
    _, operator_help, _ = slash(mesh, server, "help")
    _, viewer_help, _ = slash(mesh, server, "help", user="U0SOMEONE")
    assert "/mesh canary" in operator_help and "/mesh rollback" in operator_help
    assert "/mesh status" in viewer_help
    assert "/mesh canary" not in viewer_help and "/mesh rollback" not in viewer_help
    assert mesh.slack.roots(CHANNEL) == []


def test_bad_signature_is_401_and_changes_nothing(mesh: Mesh, server: ServeProcess) -> None:
    reply = send_slash_command(f"{server.url}/slack/events", "not-the-secret",
                               text="canary payment-service 10", user_id=OPERATOR,
                               channel_id=CHANNEL, response_url=mesh.slack.new_response_url())
    assert reply.status == 401
    stale = send_slash_command(f"{server.url}/slack/events", mesh.signing_secret,
                               text="canary payment-service 10", user_id=OPERATOR,
                               channel_id=CHANNEL, response_url=mesh.slack.new_response_url(),
                               timestamp=1_000_000_000)
    assert stale.status == 401
    mesh.run_jobs()
    assert mesh.weights("payment-service") == {"stable": 100, "canary": 0}
