"""`/mesh authz <namespace> deny-all` against callers nobody declared: the policy names no
`callers:`, so what the deny-all would cut is known only from the services' recent traffic in
the real Prometheus, which scrapes the traffic generator (its calls to payment-service come from
a web frontend over mTLS and from the batch jobs' namespace in plain text). A real `meshbot
worker` runs the jobs, against the real kube-apiserver under the chart's RBAC; the test types
the commands and plays the approver, and reads what people see from the Slack stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.adapters.audit import AuditLog
from jobs.adapters.prometheus import MetricsSource
from jobs.domain.approval_rules import Verdict
from jobs.domain.authz import Caller, observed_callers, traffic_query
from playground.slack_model import Message
from tests.fixtures.live import Live, eventually
from tests.fixtures.meshbot import CHANNEL, Mesh
from tests.integration.chatops import APPROVERS, ChatOps
from tests.integration.test_authz import assert_valid_istio
from tests.integration.test_runbook_routing import write_runbook_policy

GROUP, VERSION, PLURAL = "security.istio.io", "v1beta1", "authorizationpolicies"
NS, SVC = "production", "payment-service"
WEB = "cluster.local/ns/frontend/sa/web"
JOBS = "jobs"
ALLOW = "allow-payment-service-from-web-jobs"


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    """The runbook policy as it ships: no service declares its callers."""
    path = write_runbook_policy(tmp_path)
    data = yaml.safe_load(path.read_text())
    assert not any(s.get("callers") for s in data["services"].values())
    data["namespace_approvals"] = {"authz": 1}
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def ops(live: Live) -> Iterator[ChatOps]:
    yield ChatOps.start(live.mesh)


def policies(mesh: Mesh) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in mesh.cluster.list(GROUP, VERSION, PLURAL, NS)}


def approvals(mesh: Mesh) -> list[Message]:
    return [m for m in mesh.slack.roots(CHANNEL) if "Approval needed" in m.text]


def command(ops: ChatOps, text: str) -> str:
    """Type the command; its response_url (the live worker runs the job)."""
    ack, url = ops.command(text)
    assert "Refused" not in ack, ack
    return url


def approved(ops: ChatOps, text: str, done: str) -> None:
    """Type the command, approve the request the worker posts, wait until ``done`` exists."""
    asked = len(approvals(ops.mesh))
    command(ops, text)
    request = eventually(lambda: approvals(ops.mesh)[asked:], 30, f"an approval request for "
                         f"`{text}`")[0]
    # The message is posted a moment before its request is stored: until then a reaction is
    # on no request, and is given again.
    eventually(lambda: ops.react(APPROVERS[0], request.ts) != Verdict.NOT_A_REQUEST.value, 10,
               "the approval counted")
    eventually(lambda: done in policies(ops.mesh), 30, f"{done} written")


def test_deny_all_is_refused_naming_the_callers_prometheus_saw(ops: ChatOps,
                                                                live: Live) -> None:
    mesh = live.mesh
    live.traffic.set_callers(SVC, [WEB, JOBS], namespace=NS)
    callers = [Caller(SVC, WEB), Caller(SVC, JOBS)]
    with MetricsSource(live.prometheus.url, timeout=3) as source:
        eventually(lambda: observed_callers(source.query(traffic_query(NS)), [SVC]) == callers,
                   30, "Prometheus seeing payment-service's callers")

    url = command(ops, f"authz {NS} deny-all")
    words = eventually(lambda: "\n".join(t for t in ops.told(url) if "would cut" in t), 30,
                       "the refusal")
    assert f"`{SVC}` ← `{WEB}`" in words and f"`{SVC}` ← `{JOBS}`" in words
    assert "Nothing was changed" in words and "confirm=yes" in words
    assert "unknown" not in words  # the other services' unnamed sources are no caller
    assert policies(mesh) == {}
    assert approvals(mesh) == []  # refused before approvers are asked
    assert AuditLog(mesh.redis).last(NS, 1)[0].outcome == "refused"

    approved(ops, f"authz {NS} allow from={WEB},{JOBS} to={SVC}", ALLOW)
    approved(ops, f"authz {NS} deny-all", "deny-all")
    found = policies(mesh)
    assert set(found) == {"deny-all", ALLOW}
    assert found["deny-all"]["spec"] == {}
    assert found[ALLOW]["spec"]["rules"] == [{"from": [{"source": {"principals": [WEB]}},
                                                       {"source": {"namespaces": [JOBS]}}]}]
    for policy in found.values():
        assert_valid_istio(policy)
    entry = AuditLog(mesh.redis).last(NS, 1)[0]
    assert (entry.action, entry.outcome) == ("authz", "done")
    assert "deny-all" in (entry.after or "")
