"""Every rollout thread, status reply and alert thread carries the policy's links to the
observability stack, for the service and the time range."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from jobs.runtime import context
from jobs.runtime.handlers.alerts import handle_alert
from meshbot.alerts import Notification
from tests.fixtures.meshbot import Mesh
from tests.integration.chatops import ChatOps, write_policy

GRAFANA = ("https://grafana.example/d/istio-service?var-service={service}"
           "&var-namespace={namespace}&from={start_ms}&to={end_ms}")
KIALI = "https://kiali.example/console/namespaces/{namespace}/services/{service}"


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    path = write_policy(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["links"] = {"grafana": GRAFANA, "kiali": KIALI}
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def ops(mesh: Mesh) -> Iterator[ChatOps]:
    yield ChatOps.start(mesh)


def test_rollout_thread_and_status_carry_the_links(ops: ChatOps) -> None:
    before = int(time.time() * 1000)
    ops.command("canary payment-service 10")
    ops.run()
    root = next(text for text in ops.roots() if "payment-service" in text)
    assert "<https://kiali.example/console/namespaces/production/services/payment-service|Kiali>" \
        in root
    assert "var-service=payment-service&var-namespace=production&from=" in root
    start_ms = int(root.split("&from=")[1].split("&")[0])
    assert before - 10 * 60_000 < start_ms <= before  # from a little before the rollout began
    ops.command("status payment-service")
    ops.run()
    status = ops.roots()[-1]
    assert "*Status*" in status and "|Grafana>" in status and "|Kiali>" in status


def test_an_alert_thread_carries_the_links(ops: ChatOps, mesh: Mesh) -> None:
    notification = Notification.model_validate({
        "version": "4", "groupKey": "{}:{alertname=\"CanaryErrorRate\"}", "status": "firing",
        "alerts": [{"status": "firing", "labels": {"alertname": "CanaryErrorRate",
                                                   "destination_service_name": "user-service"},
                    "annotations": {"summary": "5xx"}, "startsAt": "2026-12-01T10:00:00Z"}],
    })
    handle_alert(context.current(), notification)
    root = next(t for t in ops.roots() if "*Alert FIRING*" in t)
    assert "services/user-service|Kiali>" in root and "|Grafana>" in root
