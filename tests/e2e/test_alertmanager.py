"""Alertmanager's webhook over HTTP against `meshbot serve`: one thread per alert group that is
opened, updated and resolved; a rollback reaction on it rolls back; the bearer token guards it.

Payloads follow Alertmanager's documented webhook format (version 4)."""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from playground.processes import ServeProcess
from playground.slack_client import reaction_event, send_event, send_slash_command
from tests.fixtures.live import eventually
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh
from tests.integration.chatops import write_policy

TOKEN = "am-test-token"
USERS_CHANNEL = "C0USERS"
GROUP_KEY = '{}/{severity="page"}:{alertname="CanaryErrorRate"}'


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    path = write_policy(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["services"]["user-service"]["channel"] = USERS_CHANNEL
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def alert_server(mesh: Mesh, tmp_path: Path) -> Iterator[ServeProcess]:
    mesh.slack.add_channel(USERS_CHANNEL, "user-service")
    with ServeProcess({**mesh.env, "ALERTMANAGER_TOKEN": TOKEN},
                      tmp_path / "serve.log") as process:
        yield process
    print(process.log())  # shown by pytest only when the test failed


def alert(name: str, service: str, status: str = "firing", **annotations: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, "severity": "page", "destination_service_name": service,
                   "destination_workload_namespace": "production"},
        "annotations": {"summary": f"{service} is failing its SLO", **annotations},
        "startsAt": "2024-05-01T10:00:00.000Z",
        "endsAt": "2024-05-01T10:30:00.000Z" if status == "resolved"
                  else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=...",
        "fingerprint": hashlib.sha256(f"{name}/{service}".encode()).hexdigest()[:16],
    }


def payload(alerts: list[dict[str, Any]], status: str = "firing",
            group_key: str = GROUP_KEY) -> dict[str, Any]:
    return {
        "version": "4", "groupKey": group_key, "truncatedAlerts": 0, "status": status,
        "receiver": "meshbot", "groupLabels": {"alertname": "CanaryErrorRate"},
        "commonLabels": {"severity": "page"}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093", "alerts": alerts,
    }


def post(server: ServeProcess, body: dict[str, Any], token: str | None = TOKEN
         ) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{server.url}/alertmanager", json.dumps(body).encode(),
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def alert_roots(mesh: Mesh, channel: str = CHANNEL) -> list[Any]:
    return [m for m in mesh.slack.roots(channel) if "*Alert " in m.text]


def test_an_alert_group_opens_updates_and_resolves_one_thread(
        mesh: Mesh, alert_server: ServeProcess) -> None:
    reply = send_slash_command(f"{alert_server.url}/slack/events", mesh.signing_secret,
                               text="canary payment-service 10", user_id=OPERATOR,
                               channel_id=CHANNEL, response_url=mesh.slack.new_response_url())
    assert reply.status == 200
    mesh.run_jobs()

    first = payload([alert("CanaryErrorRate", "payment-service", value="2.5% 5xx")])
    assert post(alert_server, first) == (200, {"status": "accepted"})
    assert post(alert_server, first) == (200, {"status": "duplicate"})  # Alertmanager's retry
    mesh.run_jobs()
    [root] = alert_roots(mesh)
    assert root.text.startswith(":rotating_light: *Alert FIRING* for `payment-service` (1 alert)")
    assert "*CanaryErrorRate* firing since 2024-05-01T10:00:00.000Z" in root.text
    assert "summary: payment-service is failing its SLO" in root.text
    assert "value: 2.5% 5xx" in root.text
    assert "labels: severity=page, destination_workload_namespace=production" in root.text
    assert "Rollout in progress:" in root.text and "canary 10%" in root.text
    assert "`/mesh rollback payment-service`, `/mesh status payment-service`" in root.text
    assert ":rewind:" in root.text

    second = payload([alert("CanaryErrorRate", "payment-service", value="4% 5xx"),
                      alert("CanaryLatencyP99", "payment-service", value="180ms")])
    assert post(alert_server, second)[0] == 200
    mesh.run_jobs()
    [root] = alert_roots(mesh)  # still one thread
    now = mesh.slack.message(CHANNEL, root.ts)
    assert "(2 alerts)" in now.text and "value: 180ms" in now.text
    thread = [m.text for m in mesh.slack.thread(CHANNEL, root.ts)]
    assert thread[-1] == (":rotating_light: Update: *CanaryErrorRate* firing since "
                          "2024-05-01T10:00:00.000Z; *CanaryLatencyP99* firing since "
                          "2024-05-01T10:00:00.000Z")

    resolved = payload([alert("CanaryErrorRate", "payment-service", "resolved"),
                        alert("CanaryLatencyP99", "payment-service", "resolved")], "resolved")
    assert post(alert_server, resolved)[0] == 200
    mesh.run_jobs()
    [root] = alert_roots(mesh)
    assert mesh.slack.message(CHANNEL, root.ts).text.startswith(
        ":white_check_mark: *Alert RESOLVED* for `payment-service`")
    last = mesh.slack.thread(CHANNEL, root.ts)[-1].text
    assert last.startswith(":white_check_mark: Resolved: *CanaryErrorRate* resolved since")
    assert "ended 2024-05-01T10:30:00.000Z" in last


def test_alerts_go_to_the_services_channel(mesh: Mesh, alert_server: ServeProcess) -> None:
    body = payload([alert("CanaryErrorRate", "user-service")], group_key="{}:{svc=user}")
    assert post(alert_server, body)[0] == 200
    mesh.run_jobs()
    assert len(alert_roots(mesh, USERS_CHANNEL)) == 1 and alert_roots(mesh) == []
    assert "Rollout in progress: none" in alert_roots(mesh, USERS_CHANNEL)[0].text


def test_a_rollback_reaction_on_the_alert_rolls_back(mesh: Mesh,
                                                     alert_server: ServeProcess) -> None:
    events = f"{alert_server.url}/slack/events"
    send_slash_command(events, mesh.signing_secret, text="canary payment-service 10",
                       user_id=OPERATOR, channel_id=CHANNEL,
                       response_url=mesh.slack.new_response_url())
    mesh.run_jobs()
    post(alert_server, payload([alert("CanaryErrorRate", "payment-service")]))
    mesh.run_jobs()
    [root] = alert_roots(mesh)

    # Someone the policy does not let roll back: refused, nothing changes.
    outsider = reaction_event("reaction_added", user="U0SOMEONE", reaction="rewind",
                              channel=CHANNEL, ts=root.ts)
    assert send_event(events, mesh.signing_secret, outsider, "Ev0OUTSIDER").status == 200
    def told_why_not() -> list[Any]:
        mesh.run_jobs()  # the bot enqueues after its ack: keep draining until it has
        return mesh.slack.ephemerals(user="U0SOMEONE")

    eventually(told_why_not, 10, "the outsider is told why not")
    assert "may not run `/mesh rollback`" in mesh.slack.ephemerals(user="U0SOMEONE")[0].text
    assert mesh.weights("payment-service") == {"stable": 90, "canary": 10}

    operator = reaction_event("reaction_added", user=OPERATOR, reaction="rewind",
                              channel=CHANNEL, ts=root.ts)
    assert send_event(events, mesh.signing_secret, operator, "Ev0OPERATOR").status == 200

    def rolled_back() -> bool:
        mesh.run_jobs()
        return mesh.weights("payment-service") == {"stable": 100, "canary": 0}

    eventually(rolled_back, 10, "the rollback from the alert ran")
    thread = [m.text for m in mesh.slack.thread(CHANNEL, root.ts)]
    assert f":rewind: <@{OPERATOR}> asked for a rollback of `payment-service` from this alert." \
        in thread


def test_the_token_guards_the_endpoint(mesh: Mesh, alert_server: ServeProcess) -> None:
    body = payload([alert("CanaryErrorRate", "payment-service")])
    assert post(alert_server, body, token=None)[0] == 401
    assert post(alert_server, body, token="wrong")[0] == 401
    status, answer = post(alert_server, {"version": "4", "alerts": []})
    assert status == 400 and "groupKey" in answer["error"]
    mesh.run_jobs()
    assert alert_roots(mesh) == []


def test_a_notification_past_the_limit_is_refused_unread(mesh: Mesh,
                                                         alert_server: ServeProcess) -> None:
    """2 MiB announced, the first kilobyte sent: 413 at once, the rest never read."""
    conn = http.client.HTTPConnection("127.0.0.1", alert_server.port, timeout=10)
    try:
        conn.putrequest("POST", "/alertmanager")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        conn.putheader("Content-Length", str(2 * 1024 * 1024))
        conn.endheaders()
        conn.send(b'{"version": "4", "alerts": [' + b" " * 1024)
        response = conn.getresponse()
        assert response.status == 413
        assert "over" in json.loads(response.read())["error"]
    finally:
        conn.close()
    mesh.run_jobs()
    assert alert_roots(mesh) == []


def test_without_a_configured_token_alerts_are_refused(
        mesh: Mesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALERTMANAGER_TOKEN", raising=False)
    with ServeProcess(mesh.env, tmp_path / "serve.log") as server:
        status, answer = post(server, payload([alert("CanaryErrorRate", "payment-service")]))
    assert status == 503 and "ALERTMANAGER_TOKEN is not set" in answer["error"]
    mesh.run_jobs()
    assert alert_roots(mesh) == []


def test_outside_text_cannot_ping_the_channel_nor_flood_it(
        mesh: Mesh, alert_server: ServeProcess) -> None:
    """Alert labels and annotations are someone else's text: Slack's control sequences in them
    are shown literally, and a huge notification becomes a readable, bounded message."""
    ping = alert("Boom <!channel>", "payment-service",
                 description="<!here> see <https://evil.example|this> & <@U0ATTACKER>")
    many = [alert(f"Noise{i}", "payment-service", description="x" * 5_000) for i in range(150)]
    body = payload([ping, *many])
    assert len(json.dumps(body)) > 750_000  # a valid notification of most of a megabyte
    assert post(alert_server, body) == (200, {"status": "accepted"})
    mesh.run_jobs()
    [root] = alert_roots(mesh)
    assert "<!channel>" not in root.text and "<!here>" not in root.text
    assert "<@U0ATTACKER>" not in root.text and "<https://evil" not in root.text
    assert "&lt;!channel&gt;" in root.text and "&amp;" in root.text
    assert len(root.text) <= 4_000
    assert "more (see Alertmanager)" in root.text or "characters cut" in root.text
    assert "/mesh rollback payment-service" in root.text  # the commands survive the cut
