"""A rollback done while Slack is down is still reported in its thread once Slack is back:
in order, once."""

from __future__ import annotations

from jobs.adapters.slack_outbox import Outbox
from jobs.runtime import context
from jobs.runtime.reports import deliver_owed
from meshbot.commands import Verb
from tests.fixtures.meshbot import EmulatedMesh
from tests.integration.test_worker_jobs import SERVICE, outcomes, submit, thread_texts


def test_a_rollback_during_a_slack_outage_is_reported_when_slack_is_back(
        emulated_mesh: EmulatedMesh) -> None:
    mesh = emulated_mesh
    submit(mesh, Verb.CANARY, 10)
    mesh.run_jobs()
    before = thread_texts(mesh)
    mesh.slack.fail("chat.postMessage", "fatal_error", times=1, status=500)  # Slack is down
    rollback = submit(mesh, Verb.ROLLBACK)
    mesh.run_jobs()
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}  # done without Slack
    assert outcomes(mesh, rollback) == ["done"]
    assert thread_texts(mesh) == before  # nothing reached the thread yet
    assert Outbox(mesh.redis).pending() == 2

    assert deliver_owed(context.current()) == 2  # Slack is back: the ticker delivers
    after = thread_texts(mesh)
    assert len(after) == len(before) + 2
    assert "*Rollback*" in after[-2] or "rollback" in after[-2].lower()
    assert "stable 100 / canary 0" in after[-1]
    assert deliver_owed(context.current()) == 0  # once
    assert thread_texts(mesh) == after
