"""An approved request voided because its service changed is told and audited even when Slack
fails to edit the request message (it was lost silently: the job's retry found it voided)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.adapters.audit import AuditLog
from tests.fixtures.meshbot import Mesh
from tests.integration.chatops import APPROVERS, ChatOps, write_policy
from tests.integration.test_approvals import SERVICE, request_canary_30

A1, A2, _ = APPROVERS


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    return write_policy(tmp_path)


@pytest.fixture
def ops(mesh: Mesh) -> Iterator[ChatOps]:
    yield ChatOps.start(mesh)


def test_a_voided_request_is_told_and_audited_when_slack_fails_the_edit(
        ops: ChatOps, mesh: Mesh) -> None:
    ts, url = request_canary_30(ops)
    ops.command(f"canary {SERVICE} 10", user="U0OPERATOR2")  # the facts change meanwhile
    ops.run()
    ops.react(A1, ts)
    ops.react(A2, ts)
    mesh.slack.fail("chat.update", "fatal_error", times=20, status=500)  # edits fail
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}  # not 70/30
    assert any("Voided" in t for t in ops.told(url))
    outcomes = [e.outcome for e in AuditLog(mesh.redis).last(SERVICE, 30)]
    assert "voided" in outcomes
