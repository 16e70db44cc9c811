"""An automatic rollback decided while Slack rate-limits meshbot: the weights are written and
audited at once, nothing is left for the reconcile to settle (the service is not kept out of the
analysis for Slack's window), and what Slack did not take — the thread's report, the channel's
alert, the status message — is delivered once the window is over, each once.

As in ``test_unwritable_weights``: Prometheus is not there (every check is "no data", and the
policy rolls back past a 1 s deadline); ticks run as the ticker runs them, their clock given.
Slack's window is real time (it is shared through Redis), so it is short here."""

from __future__ import annotations

import contextlib
import time

from jobs.adapters.audit import AuditLog
from jobs.adapters.prometheus import MetricsSource
from jobs.domain.rollout import Phase
from jobs.runtime import context
from jobs.runtime.analysis import tick
from jobs.runtime.reconcile import GRACE_S, reconcile
from jobs.runtime.reports import deliver_owed
from meshbot.errors import SlackRateLimited
from tests.fixtures.meshbot import CHANNEL, EmulatedMesh
from tests.integration.test_unwritable_weights import (  # noqa: F401 (fixtures)
    a_running_canary,
    no_prometheus,
    policy_path,
    rollout,
    vs_writes,
)
from tests.integration.test_worker_jobs import SERVICE

WINDOW_S = 4.0  # past the notifier's inline wait (3 s): deferred, not waited out
ALERT = "was rolled back automatically"
REPORT = "Automatic rollback of"


def texts(mesh: EmulatedMesh) -> list[str]:
    return [m.text for m in mesh.slack.messages(CHANNEL)]


def delivered_within(mesh: EmulatedMesh, deadline_s: float) -> list[str]:
    """The ticker's delivery of owed reports, tick after tick, until the alert is out."""
    ctx = context.current()
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        deliver_owed(ctx)
        with contextlib.suppress(SlackRateLimited):  # the ticker logs it and goes on
            ctx.notifier.flush(wait=False)
        if any(ALERT in t for t in texts(mesh)) and any(
                "rolled back" in t for t in _status(mesh)):
            break
        time.sleep(0.2)  # a tick's interval, not a synchronisation: the loop checks
    return texts(mesh)


def _status(mesh: EmulatedMesh) -> list[str]:
    return [m.text for m in mesh.slack.roots(CHANNEL) if "*Canary*" in m.text]


def test_a_rollback_during_a_slack_rate_limit_is_done_at_once_and_said_when_slack_is_back(
        emulated_mesh: EmulatedMesh, no_prometheus: MetricsSource) -> None:  # noqa: F811
    mesh = emulated_mesh
    a_running_canary(mesh)
    ctx = context.current()
    tick(ctx, no_prometheus, now=rollout().next_check_at)  # holding: no data yet
    assert rollout().phase is Phase.HOLDING
    mesh.slack.rate_limit("chat.postMessage", times=1, retry_after=WINDOW_S)
    mesh.slack.rate_limit("chat.update", times=1, retry_after=WINDOW_S)
    before = vs_writes(mesh)
    when = rollout().next_check_at
    tick(ctx, no_prometheus, now=when)  # past the deadline: the rollback is decided

    # Done, at once, whatever Slack said: the mesh, the phase and the audit agree.
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert vs_writes(mesh) - before == 1
    assert rollout().phase is Phase.ROLLED_BACK
    rollbacks = [e for e in AuditLog(mesh.redis).last(SERVICE, 50) if e.action == "rollback"]
    assert [(e.actor, e.after) for e in rollbacks] == [("meshbot", "stable 100 / canary 0")]
    # Nothing left unsettled: the reconcile has nothing to write or say after its grace.
    assert ctx.store.unapplied_since(when + 3600) == []
    assert reconcile(ctx, now=when + GRACE_S + 1) == []
    assert not [e for e in AuditLog(mesh.redis).last(SERVICE, 50) if e.action == "reconcile"]
    # Slack refused the report and the window holds back the alert: neither is shown yet.
    assert not [t for t in texts(mesh) if REPORT in t or ALERT in t]

    shown = delivered_within(mesh, deadline_s=WINDOW_S + 10)
    assert len([t for t in shown if t.startswith(f":rotating_light: {REPORT}")]) == 1, shown
    assert len([t for t in shown if ALERT in t]) == 1, shown
    # The report went into the rollout's thread, the alert into the channel as its own message.
    root = _status(mesh)
    assert len(root) == 1 and "rolled back" in root[0], root
    thread = [m.text for m in mesh.slack.thread(CHANNEL, mesh.slack.roots(CHANNEL)[0].ts)]
    assert any(t.startswith(f":rotating_light: {REPORT}") for t in thread), thread
    assert any(ALERT in m.text for m in mesh.slack.roots(CHANNEL)), shown

    # Delivered once: later ticks say nothing again.
    deliver_owed(ctx)
    assert texts(mesh) == shown
