"""A blue-green to the end without a second command: the analysis's part.

When a blue-green's 90/10 step passes, the rollout does not stop at ready-to-promote (which the
analysis no longer watches): it waits for its cutover's approvals, still watched, so a breach
meanwhile goes back to the stable subset as before the step passed. The analysis submits the
cutover request on behalf of who started the blue-green, with the tier's promote approvals; a
worker posts it into the rollout's thread (``handlers.approvals``), and once approved the
cutover runs (``handlers.bluegreen``). A rollback meanwhile (a breach, ``/mesh rollback``,
``/mesh abort``) closes the request: its approvals are not used.
"""

from __future__ import annotations

import time

from jobs.adapters.approval_store import ApprovalStore
from jobs.adapters.audit import AuditEntry
from jobs.domain.approval_rules import ApprovalState, PendingApproval
from jobs.domain.rollout import Event, Phase, Rollout, apply
from jobs.runtime.api import submit
from jobs.runtime.approvals import enqueue_refresh
from jobs.runtime.context import JobContext
from meshbot.commands import Command, Request, Verb
from policies.views import ServiceView
from rendering import routing as routing_text

# ``Command.options`` of the cutover request: the rollout it cuts over, and the thread its
# approval request is posted in. Only meshbot sets them: the grammar takes no options here.
CUTOVER = "cutover"
THREAD = "thread"
# An approval request still able to lead to the cutover.
_LIVE = frozenset({ApprovalState.OPEN, ApprovalState.APPROVED, ApprovalState.WAITING})


def gated(rollout: Rollout, now: float) -> Rollout:
    """A blue-green whose step just passed waits for its cutover, watched; anything else is
    left as it is."""
    if rollout.bluegreen and rollout.phase is Phase.READY_TO_PROMOTE:
        return apply(rollout, Event.GATE, now, "the cutover is asked for")
    return rollout


def waiting_for_cutover(rollout: Rollout) -> bool:
    return rollout.bluegreen and (rollout.phase is Phase.READY_TO_PROMOTE or (
        rollout.phase is Phase.AWAITING_APPROVAL
        and rollout.resume_phase is Phase.READY_TO_PROMOTE))


def cutover_id(rollout_id: str, attempt: int = 1) -> str:
    return f"{rollout_id}-cutover" if attempt <= 1 else f"{rollout_id}-cutover-{attempt}"


def cutover_request(ctx: JobContext, view: ServiceView, rollout: Rollout, attempt: int = 1,
                    user: str | None = None) -> Request:
    """The cutover, asked for by who started the blue-green (or who asks again); the policy's
    approvers but the requester may approve it, the tier's promote count of them."""
    requester = user or rollout.requested_by
    approvers = tuple(m for m in ctx.policy.members(ctx.policy.approve) if m != requester)
    return Request(
        id=cutover_id(rollout.id, attempt),
        # In the cluster whose analysis found it ready (the tick's context is that cluster's).
        command=Command(verb=Verb.BLUEGREEN, target=view.name, cluster=ctx.cluster,
                        options={CUTOVER: rollout.id, THREAD: rollout.thread_ts or ""}),
        user=requester, channel=rollout.channel, received_at=time.time(),
        approvals_required=view.approvals.promote, eligible_approvers=approvers,
    )


def ask(ctx: JobContext, view: ServiceView, rollout: Rollout, attempt: int = 1,
        user: str | None = None) -> bool:
    """Submit the cutover request; True the first time. A tick that runs twice, or on two
    workers, submits nothing more: the request's id is the rollout's (and the attempt's), and
    ``submit`` takes an id once, in the same transaction as the job."""
    return submit(ctx.redis, cutover_request(ctx, view, rollout, attempt, user),
                  queue=ctx.settings.queue_name)


def _requests(store: ApprovalStore, rollout: Rollout) -> list[PendingApproval]:
    """The cutover's approval requests so far, the first one first."""
    found: list[PendingApproval] = []
    while (pending := store.for_request(cutover_id(rollout.id, len(found) + 1))) is not None:
        found.append(pending)
    return found


def next_attempt(ctx: JobContext, rollout: Rollout) -> int | None:
    """The attempt a ``/mesh bluegreen`` asks for when the rollout still waits for its cutover
    but its last request ended without it (rejected, expired, voided); None otherwise."""
    if not waiting_for_cutover(rollout):
        return None
    asked = _requests(ApprovalStore(ctx.redis), rollout)
    if not asked or asked[-1].state in _LIVE or asked[-1].state is ApprovalState.DONE:
        return None
    return len(asked) + 1


def void(ctx: JobContext, rollout: Rollout | None, cause: str) -> bool:
    """The blue-green went back (``cause``) while its cutover was asked for: the request
    closes, saying its approvals were not used; True if one was closed now."""
    if rollout is None or not rollout.bluegreen:
        return False
    reason = routing_text.bluegreen_went_back(rollout.service, rollout.stable_subset, cause)
    store = ApprovalStore(ctx.redis)
    live = [p for p in _requests(store, rollout) if p.state in _LIVE]
    if not live:
        return False
    pending = live[-1]  # one at a time: another is asked only once the last one closed

    def close(p: PendingApproval) -> tuple[PendingApproval, bool]:
        if p.state not in _LIVE:
            return p, False
        text = routing_text.bluegreen_cutover_void(reason, p.approvals)
        return p.model_copy(update={"state": ApprovalState.VOIDED, "detail": text}), True

    result = store.update(pending.channel, pending.ts, close)
    if result is None or not result[1]:
        return False
    closed = result[0]
    ctx.audit.record(AuditEntry(
        actor="meshbot", action=Verb.BLUEGREEN.value, target=rollout.service,
        outcome="not used", request_id=closed.request.id, approvers=closed.approvals,
        permalink=closed.permalink, detail=reason))
    # A job edits the message and tells its thread: a rollback never waits for Slack.
    enqueue_refresh(ctx.redis, closed.channel, closed.ts, ctx.settings.queue_name)
    return True
