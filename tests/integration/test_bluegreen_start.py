"""`/mesh bluegreen` from the bot's listener to the real kube-apiserver (a real RQ worker, the
Slack stand-in): the start needs no approval, a second one is refused while one runs, its dry
run plans exactly what the start then writes, and the cutover request meshbot submits when the
analysis is ready is asked once however often it is submitted, in the rollout's thread, and
closed unused by a rollback. (The analysis itself, against a real Prometheus, is
``tests/e2e/test_bluegreen.py``.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.adapters.approval_store import ApprovalStore
from jobs.adapters.audit import AuditLog
from jobs.adapters.rollout_store import RolloutStore
from jobs.domain import rollout as machine
from jobs.domain.approval_rules import ApprovalState
from jobs.domain.rollout import Event, Phase, Rollout
from jobs.runtime import bluegreen_cutover, context
from jobs.runtime.handlers.bluegreen import start_plan
from jobs.runtime.handlers.common import subsets_of
from meshbot.plan import Action, ObjectChange
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh
from tests.fixtures.slack import fail_post_saying
from tests.integration.chatops import APPROVERS, ChatOps
from tests.integration.test_runbook_routing import blue_green, http, run, vs, write_runbook_policy
from tests.integration.test_worker_jobs import release_retries

SVC = "order-service"  # critical, subsets blue and green
PREVIEW = {"headers": {"canary": {"exact": "true"}}}
OTHER_OPERATOR = "U0OPERATOR2"


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    return write_runbook_policy(tmp_path)


@pytest.fixture
def ops(mesh: Mesh) -> Iterator[ChatOps]:
    blue_green(mesh, SVC)
    yield ChatOps.start(mesh)


def rollout(mesh: Mesh) -> Rollout:
    found = RolloutStore(mesh.redis).get(SVC)
    assert found is not None
    return found


def thread_root(ops: ChatOps) -> str:
    [root] = [m for m in ops.mesh.slack.roots(CHANNEL) if "*Blue-green*" in m.text]
    return root.ts


def test_the_start_needs_no_approval_and_writes_preview_and_90_10(ops: ChatOps,
                                                                  mesh: Mesh) -> None:
    ack, _ = ops.command(f"bluegreen {SVC}")
    assert "pending approval" not in ack and "Refused" not in ack
    ops.run()
    preview, _ = http(mesh, SVC)
    assert preview["match"] == [PREVIEW]
    assert preview["route"] == [{"destination": {"host": SVC, "subset": "green"}}]
    assert mesh.weights(SVC) == {"blue": 90, "green": 10}
    started = rollout(mesh)
    assert started.bluegreen and started.steps == (10,) and started.phase is Phase.PROGRESSING
    assert started.title.startswith(":large_blue_circle: *Blue-green*")
    texts = ops.thread(thread_root(ops))
    assert "then all traffic to green after 2 approvals" in texts[0]
    assert any("meshbot asks for the cutover in this thread (2 approvals)" in t
               and "no second command" in t for t in texts)
    assert not [r for r in ops.roots() if "Approval needed" in r]


def test_a_second_bluegreen_while_one_runs_is_refused_and_changes_nothing(
        ops: ChatOps, mesh: Mesh) -> None:
    run(ops, f"bluegreen {SVC}")
    before = vs(mesh, SVC)
    url = run(ops, f"bluegreen {SVC}", user=OTHER_OPERATOR)
    told = [t for t in ops.told(url, user=OTHER_OPERATOR) if "Refused" in t]
    assert len(told) == 1
    assert f"`{SVC}` already has a blue-green progressing (started by <@{OPERATOR}>)" in told[0]
    assert "asks for its cutover itself" in told[0]
    assert vs(mesh, SVC) == before
    assert len([r for r in ops.roots() if "*Blue-green*" in r]) == 1


def test_a_bluegreen_while_a_canary_runs_is_refused(ops: ChatOps, mesh: Mesh) -> None:
    run(ops, f"canary {SVC} 5")
    before = vs(mesh, SVC)
    url = run(ops, f"bluegreen {SVC}")
    assert any("has a rollout progressing: a blue-green starts when none is in progress" in t
               for t in ops.told(url))
    assert vs(mesh, SVC) == before


def test_the_dry_run_plans_what_the_start_then_writes(ops: ChatOps, mesh: Mesh) -> None:
    original = vs(mesh, SVC)
    url = run(ops, f"bluegreen {SVC} dry-run")
    [told] = [t for t in ops.told(url) if "Dry run" in t]
    assert f"Dry run of `/mesh bluegreen {SVC}` — nothing was changed" in told
    assert f"update VirtualService production/{SVC}" in told
    for step in ("watch green at 10% under analysis", "ask 2 approvals for the cutover",
                 "all traffic to green (blue 0 / green 100), then the preview route removed",
                 "a breach at any point: all traffic back to blue"):
        assert step in told
    assert vs(mesh, SVC) == original
    assert RolloutStore(mesh.redis).get(SVC) is None
    assert not [r for r in ops.roots() if "*Blue-green*" in r]  # a dry run opens no thread

    ctx = context.current()
    view = ctx.policy.service(SVC)
    assert view is not None
    [planned] = start_plan(ctx, view, subsets_of(ctx, view)).effective  # what the reply showed
    run(ops, f"bluegreen {SVC}")
    held = vs(mesh, SVC)
    assert planned.action is Action.UPDATE
    # What the plan said the object would be is what the API server holds after both writes.
    assert ObjectChange("VirtualService", "production", SVC, planned.after, held).fields == ()


def ready(mesh: Mesh, service: str = SVC) -> Rollout:
    """What the analysis commits when the 90/10 step passes: the rollout waits, watched, for
    its cutover (``bluegreen_cutover.gated``)."""
    now = time.time()
    moved = RolloutStore(mesh.redis).update(service, lambda r: bluegreen_cutover.gated(
        machine.apply(r, Event.CHECK_PASSED, now, "success 100%"), now) if r else None)
    assert moved is not None and moved.phase is Phase.AWAITING_APPROVAL
    return moved


def test_the_cutover_is_asked_once_in_the_thread_and_a_rollback_closes_it_unused(
        ops: ChatOps, mesh: Mesh) -> None:
    run(ops, f"bluegreen {SVC}")
    waiting = ready(mesh)
    ctx = context.current()
    view = ctx.policy.service(SVC)
    assert view is not None
    # A tick that runs twice (or on two workers) asks once.
    assert bluegreen_cutover.ask(ctx, view, waiting)
    assert not bluegreen_cutover.ask(ctx, view, waiting)
    ops.run()
    root = thread_root(ops)
    requests = [m for m in mesh.slack.thread(CHANNEL, root) if "Approval needed" in m.text]
    assert len(requests) == 1 and requests[0].thread_ts == root
    pending = ApprovalStore(mesh.redis).get(CHANNEL, requests[0].ts)
    assert pending is not None and pending.required == 2
    assert set(pending.eligible) >= set(APPROVERS[1:]) and OPERATOR not in pending.eligible
    ops.react(APPROVERS[1], pending.ts)
    ops.run()

    run(ops, f"rollback {SVC}")
    closed = ApprovalStore(mesh.redis).get(CHANNEL, pending.ts)
    assert closed is not None and closed.state is ApprovalState.VOIDED
    assert f"the approvals of <@{APPROVERS[1]}> were not used" in closed.detail
    assert "Cutover not run" in mesh.slack.message(CHANNEL, pending.ts).text
    assert mesh.weights(SVC) == {"blue": 100, "green": 0}
    assert [r["match"] for r in http(mesh, SVC) if "match" in r] == []  # preview route gone
    assert any(e.outcome == "not used" and e.request_id == pending.request.id
               for e in AuditLog(mesh.redis).last(SVC, 30))
    ops.react(APPROVERS[2], pending.ts)  # too late: nothing runs
    ops.run()
    assert mesh.weights(SVC) == {"blue": 100, "green": 0}
    assert rollout(mesh).phase is Phase.ROLLED_BACK


def test_a_tier_that_needs_no_approval_is_cut_over_at_once(ops: ChatOps, mesh: Mesh) -> None:
    service = "logging-service"  # pilot: no promote approvals
    run(ops, f"bluegreen {service}")
    assert mesh.weights(service) == {"stable": 90, "canary": 10}
    waiting = ready(mesh, service)
    ctx = context.current()
    view = ctx.policy.service(service)
    assert view is not None
    assert bluegreen_cutover.ask(ctx, view, waiting)
    ops.run()
    assert mesh.weights(service) == {"stable": 0, "canary": 100}
    assert [r for r in http(mesh, service) if "match" in r] == []
    assert not [m for m in mesh.slack.messages(CHANNEL) if "Approval needed" in m.text]
    done = RolloutStore(mesh.redis).get(service)
    assert done is not None and done.phase is Phase.PROMOTED
    assert RolloutStore(mesh.redis).live_subset(service, default="stable") == "canary"


def test_a_rejected_cutover_is_asked_for_again_by_the_same_command(ops: ChatOps,
                                                                  mesh: Mesh) -> None:
    run(ops, f"bluegreen {SVC}")
    waiting = ready(mesh)
    ctx = context.current()
    view = ctx.policy.service(SVC)
    assert view is not None
    assert bluegreen_cutover.ask(ctx, view, waiting)
    ops.run()
    first = ops.mesh.slack.thread(CHANNEL, thread_root(ops))[-1]
    assert "Approval needed" in first.text
    ops.react(APPROVERS[1], first.ts, emoji=ctx.policy.approvals.reject_emoji)
    ops.run()
    rejected = ApprovalStore(mesh.redis).get(CHANNEL, first.ts)
    assert rejected is not None and rejected.state is ApprovalState.REJECTED
    assert mesh.weights(SVC) == {"blue": 90, "green": 10}  # still at 90/10, still watched
    assert rollout(mesh).phase is Phase.AWAITING_APPROVAL
    thread = [m.text for m in mesh.slack.thread(CHANNEL, thread_root(ops))]
    assert any(f"`/mesh bluegreen {SVC}` asks for the cutover again" in t for t in thread)

    url = run(ops, f"bluegreen {SVC}", user=OTHER_OPERATOR)  # asks again, on their behalf
    assert not [t for t in ops.told(url, user=OTHER_OPERATOR) if "Refused" in t]
    again = [m for m in mesh.slack.thread(CHANNEL, thread_root(ops))
             if "Approval needed" in m.text and m.ts != first.ts]
    assert len(again) == 1
    second = ApprovalStore(mesh.redis).get(CHANNEL, again[0].ts)
    assert second is not None and second.request.user == OTHER_OPERATOR
    url = run(ops, f"bluegreen {SVC}")  # one request at a time
    assert any("already has a blue-green awaiting approval" in t for t in ops.told(url))
    for approver in APPROVERS[1:]:
        ops.react(approver, second.ts)
    ops.run()
    assert mesh.weights(SVC) == {"blue": 0, "green": 100}
    assert [r for r in http(mesh, SVC) if "match" in r] == []
    assert rollout(mesh).phase is Phase.PROMOTED


def test_a_start_retried_after_its_last_report_failed_ends_as_one_start(
        ops: ChatOps, mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slack answers 500 to the start's last report (the preview route and the 90/10 written):
    RQ runs it again. One preview route, one 90/10 rollout, each audited once, said once."""
    fail_post_saying(mesh.slack, monkeypatch, "Analysis watches green at 10%")
    _, url = ops.command(f"bluegreen {SVC}")
    ops.run()
    while release_retries(mesh.redis):
        ops.run()

    assert mesh.weights(SVC) == {"blue": 90, "green": 10}
    started = rollout(mesh)
    assert started.bluegreen and started.phase is Phase.PROGRESSING
    texts = ops.thread(thread_root(ops))
    assert len([t for t in texts if "Analysis watches green at 10%" in t]) == 1, texts
    assert not any("Refused" in t or "already" in t for t in ops.told(url)), ops.told(url)
    entries = [(e.outcome, e.detail) for e in AuditLog(mesh.redis).last(SVC, 30)
               if e.action == "bluegreen"]
    assert len(entries) == len(set(entries)), entries  # nothing audited twice


def test_a_cutover_retried_after_its_last_report_failed_says_which_routes_it_removed(
        ops: ChatOps, mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slack answers 500 to "Blue-green done" (the 0/100 and the preview route's removal
    written): RQ runs the cutover again. Its thread and its audit name the VirtualService the
    preview route was removed from, once — not "nothing (already as asked)", which is what its
    retry finds."""
    service = "logging-service"  # pilot: cut over at once, no approval
    run(ops, f"bluegreen {service}")
    ctx = context.current()
    view = ctx.policy.service(service)
    assert view is not None
    fail_post_saying(mesh.slack, monkeypatch, "Blue-green done")
    assert bluegreen_cutover.ask(ctx, view, ready(mesh, service))
    ops.run()
    while release_retries(mesh.redis):
        ops.run()

    assert mesh.weights(service) == {"stable": 0, "canary": 100}
    assert [r for r in http(mesh, service) if "match" in r] == []
    [root] = [m for m in mesh.slack.roots(CHANNEL) if "*Blue-green*" in m.text]
    done = [t for t in ops.thread(root.ts) if "Blue-green done" in t]
    assert len(done) == 1, done
    assert f"preview route removed from `{service}`" in done[0], done
    details = [e.detail for e in AuditLog(mesh.redis).last(service, 30)
               if e.action == "bluegreen" and "removed from" in e.detail]
    assert details == [f"preview header route removed from {service}"], details
