"""A rollout's next step needs approvers (the critical tier's ``canary_above: 25``) at a moment
Slack does not take the approval request (a 500). The rollout waits for approvals from then on,
so the request must still reach the channel: a job posts it once Slack takes it — once, with
its audit entry — and an approver's reactions on it then count. Before, the ticker's request
was lost and the rollout waited for approvals nobody could give.

The analysis's action for the gate is called as the tick calls it, on a rollout whose step at
25 % has just passed its check."""

from __future__ import annotations

import time

from jobs.adapters.approval_store import ApprovalStore
from jobs.adapters.audit import AuditLog
from jobs.adapters.rollout_store import RolloutStore
from jobs.domain import rollout as machine
from jobs.domain.rollout import Event, Phase
from jobs.runtime import context
from jobs.runtime.analysis_actions import act
from meshbot.commands import Verb
from tests.fixtures.meshbot import CHANNEL, EmulatedMesh
from tests.integration.test_worker_jobs import SERVICE, release_retries, submit


def test_a_gate_whose_approval_request_slack_refused_is_posted_by_a_job(
        emulated_mesh: EmulatedMesh) -> None:
    mesh = emulated_mesh
    submit(mesh, Verb.ROLLOUT)
    mesh.run_jobs()
    store = RolloutStore(mesh.redis)
    at_25 = store.update(SERVICE, lambda r: r.model_copy(update={
        "step_index": r.steps.index(25), "weight": 25}) if r else None)
    assert at_25 is not None and at_25.phase is Phase.PROGRESSING
    gated = machine.apply(at_25, Event.GATE, time.time(), "checks passed")
    store.put(gated)  # the tick commits, then acts
    ctx = context.current()
    view = ctx.policy.service(SERVICE)
    assert view is not None
    mesh.slack.fail("chat.postMessage", "fatal_error", times=2, status=500)  # report, request

    act(ctx, view, at_25, gated, Event.GATE, ["success 100%"], [])

    approvals = ApprovalStore(mesh.redis)
    request_id = f"{gated.id}-step-{gated.step_index + 1}"
    assert approvals.for_request(request_id) is None  # not posted yet
    mesh.run_jobs()
    while release_retries(mesh.redis):  # RQ's retries, as their time comes
        mesh.run_jobs()

    pending = approvals.for_request(request_id)
    assert pending is not None and pending.required == 2, pending
    asked = [m for m in mesh.slack.roots(CHANNEL) if m.ts == pending.ts]
    assert len(asked) == 1 and "50" in asked[0].text, [m.text for m in mesh.slack.roots(CHANNEL)]
    requested = [e for e in AuditLog(mesh.redis).last(SERVICE, 30)
                 if e.request_id == request_id and e.outcome == "approval requested"]
    assert len(requested) == 1, requested
    waiting = store.get(SERVICE)
    assert waiting is not None and waiting.phase is Phase.AWAITING_APPROVAL
