"""The worker's side of approvals: post the request, re-check it at quorum, report, expire.

``jobs.tasks.handle_request`` sends here every request that still lacks approvals (it never
reaches its handler), and every approved one before its handler runs. The reactions themselves
are counted by the bot (``jobs.approvals.react``); the jobs below only say what happened.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from rq import Queue
from rq.serializers import JSONSerializer

from jobs.adapters.approval_store import ApprovalStore
from jobs.adapters.audit import AuditEntry
from jobs.adapters.locks import Locks
from jobs.domain.approval_rules import ApprovalState, PendingApproval, changed_facts, expire
from jobs.runtime import context
from jobs.runtime.approvals import RETRY
from jobs.runtime.context import JobContext
from jobs.runtime.gates import check_gates, service_lock
from jobs.runtime.handlers.approval_plan import compose, facts_now
from meshbot.commands import Request
from meshbot.errors import MeshbotError
from rendering import approvals as approval_text

log = logging.getLogger("meshbot.approvals")

EXPIRE_TASK = "jobs.runtime.handlers.approvals.expire_job"


def request_approval(ctx: JobContext, request: Request) -> str:
    """Post the approval request in the channel and keep it in Redis until it is answered."""
    store = ApprovalStore(ctx.redis)
    if store.for_request(request.id) is not None:
        return "awaiting approval"  # a retry of this job: the request is already posted
    plan = compose(ctx, request)
    now = time.time()
    ttl = ctx.policy.approvals.ttl
    pending = PendingApproval(
        channel=request.channel, ts="", request=request, plan=plan.text,
        precondition=plan.facts, required=request.approvals_required,
        eligible=request.eligible_approvers, created_at=now, expires_at=now + ttl,
        thread_link=plan.thread_link,
    )
    ts = ctx.notifier.post_root(request.channel, render(ctx, pending))
    pending = pending.model_copy(update={"ts": ts, "permalink": _permalink(ctx, request.channel,
                                                                          ts)})
    store.create(pending)
    Queue(ctx.settings.queue_name, connection=ctx.redis, serializer=JSONSerializer).enqueue_in(
        timedelta(seconds=ttl), EXPIRE_TASK, request.channel, ts,
        job_id="expire-" + hashlib.sha256(f"{request.channel} {ts}".encode()).hexdigest()[:32],
        retry=RETRY, result_ttl=600, failure_ttl=24 * 3600,
    )
    _audit(ctx, pending, request.user, "approval requested", detail=plan.text)
    return "awaiting approval"


def confirm(ctx: JobContext, request: Request) -> bool:
    """Whether an approved request may run now; voids it (and says so) if the target changed.

    The payload's ``approved_by`` is not trusted on its own: the stored approval must be in the
    approved state with the same approvers. A retry of a job that already passed this check
    (``started``) is let through, since its own first attempt may have changed the facts.
    """
    store = ApprovalStore(ctx.redis)
    pending = store.for_request(request.id)
    if pending is None or pending.state is not ApprovalState.APPROVED or \
            set(pending.approvals) != set(request.approved_by) or \
            len(pending.approvals) < pending.required:
        log.warning("approved request %s has no matching approval (%s); not run", request.id,
                    pending.state if pending else "missing")
        return False
    if pending.started:
        return True
    changes = changed_facts(pending.precondition, facts_now(ctx, request))
    if changes:
        text = approval_text.approval_voided(changes)
        result = store.update(pending.channel, pending.ts, lambda p: (p.model_copy(
            update={"state": ApprovalState.VOIDED, "detail": text}), None))
        refresh(ctx, pending.channel, pending.ts)
        _tell(ctx, request, text)
        _audit(ctx, result[0] if result else pending, "meshbot", "voided", detail=text)
        return False
    store.update(pending.channel, pending.ts,
                 lambda p: (p.model_copy(update={"started": True}), None))
    return True


def finish(ctx: JobContext, request: Request) -> None:
    """The approved work ran: mark it done and name the approvers in the work's thread."""
    store = ApprovalStore(ctx.redis)
    pending = store.for_request(request.id)
    if pending is None:
        return
    thread = _work_thread(ctx, request)
    link = pending.thread_link or (_permalink(ctx, *thread) if thread else None)
    store.update(pending.channel, pending.ts, lambda p: (p.model_copy(
        update={"state": ApprovalState.DONE, "thread_link": link}), None))
    refresh(ctx, pending.channel, pending.ts)
    if thread is not None and thread != (pending.channel, pending.ts):
        ctx.notifier.reply(*thread, approval_text.approved_by(pending.approvals, pending.permalink))


def render(ctx: JobContext, pending: PendingApproval) -> str:
    ttl = pending.expires_at - pending.created_at
    status = {
        ApprovalState.OPEN: lambda: approval_text.approval_progress(pending.approvals,
                                                               pending.required),
        ApprovalState.APPROVED: lambda: approval_text.approval_approved(pending.approvals),
        ApprovalState.REJECTED: lambda: approval_text.approval_rejected(pending.closed_by or ""),
        ApprovalState.EXPIRED: lambda: approval_text.approval_expired(ttl, pending.approvals,
                                                                 pending.required),
        ApprovalState.VOIDED: lambda: pending.detail,
        ApprovalState.DONE: lambda: approval_text.approval_done(pending.approvals),
    }[pending.state]()
    settings = ctx.policy.approvals
    return approval_text.approval_request(
        pending.request.command, pending.request.user, pending.plan, pending.eligible,
        pending.required, settings.approve_emoji, settings.reject_emoji, pending.expires_at, ttl,
        pending.thread_link, status)


def refresh(ctx: JobContext, channel: str, ts: str) -> str:
    """Show the approval's current state on its message; say a closing state once in its
    thread (and to the requester when nothing will run)."""
    store = ApprovalStore(ctx.redis)
    pending = store.get(channel, ts)
    if pending is None:
        return "gone"
    ctx.notifier.update(channel, ts, render(ctx, pending))
    ctx.notifier.flush()  # a quick second vote is paced, not dropped
    state = pending.state
    if state in (ApprovalState.OPEN, ApprovalState.DONE) or pending.announced is state:
        return state.value
    text = render_status(pending)
    ctx.notifier.reply(channel, ts, text)
    if state in (ApprovalState.REJECTED, ApprovalState.EXPIRED):
        _tell(ctx, pending.request, text)
    store.update(channel, ts, lambda p: (p.model_copy(update={"announced": state}), None))
    return state.value


def render_status(pending: PendingApproval) -> str:
    if pending.state is ApprovalState.REJECTED:
        return approval_text.approval_rejected(pending.closed_by or "")
    if pending.state is ApprovalState.EXPIRED:
        return approval_text.approval_expired(pending.expires_at - pending.created_at,
                                         pending.approvals, pending.required)
    if pending.state is ApprovalState.VOIDED:
        return pending.detail
    return approval_text.approval_approved(pending.approvals)


def expire_one(ctx: JobContext, channel: str, ts: str, now: float) -> bool:
    """Expire the approval if it is still open at ``now``; True if it expired now."""
    store = ApprovalStore(ctx.redis)
    result = store.update(channel, ts, lambda p: ((expire(p, now) or p), expire(p, now)))
    if result is None or result[1] is None:
        return False
    _audit(ctx, result[0], "meshbot", "expired",
           detail=f"{len(result[0].approvals)} of {result[0].required} approvals")
    refresh(ctx, channel, ts)
    return True


def expire_due(ctx: JobContext, now: float) -> int:
    """Expire every open approval past its TTL (a sweep, e.g. from the ticker); how many."""
    return sum(expire_one(ctx, c, t, now) for c, t in ApprovalStore(ctx.redis).due(now))


# -- RQ entry points (module-level, JSON-safe arguments) ----------------------------------------

def refresh_job(channel: str, ts: str) -> str:
    return refresh(context.current(), channel, ts)


def expire_job(channel: str, ts: str) -> str:
    """Scheduled at the request's expiry (RQ ``enqueue_in``): its time has come."""
    ctx = context.current()
    pending = ApprovalStore(ctx.redis).get(channel, ts)
    if pending is None:
        return "gone"
    # The scheduler may fire a moment early by this host's clock; the schedule is the deadline.
    expired = expire_one(ctx, channel, ts, max(time.time(), pending.expires_at))
    return "expired" if expired else pending.state.value


# -- helpers -----------------------------------------------------------------------------------

def _work_thread(ctx: JobContext, request: Request) -> tuple[str, str] | None:
    raw = ctx.redis.get(f"meshbot:thread:{request.id}")
    if raw:
        return request.channel, raw.decode() if isinstance(raw, bytes) else str(raw)
    rollout = ctx.store.get(request.command.target) if request.command.target else None
    if rollout is not None and rollout.channel and rollout.thread_ts:
        return rollout.channel, rollout.thread_ts
    return None


def _permalink(ctx: JobContext, channel: str, ts: str) -> str | None:
    try:
        return ctx.notifier.permalink(channel, ts)
    except MeshbotError:
        return None  # the audit entry is still worth having without the link


def _tell(ctx: JobContext, request: Request, text: str) -> None:
    try:
        ctx.notifier.ephemeral(text, response_url=request.response_url, channel=request.channel,
                               user=request.user)
    except MeshbotError as exc:
        log.warning("could not tell %s: %s", request.user, exc.message)


def _audit(ctx: JobContext, pending: PendingApproval, actor: str, outcome: str,
           detail: str = "") -> None:
    command = pending.request.command
    ctx.audit.record(AuditEntry(
        actor=actor, action=command.verb.value, target=command.target, outcome=outcome,
        request_id=pending.request.id, approvers=pending.approvals,
        permalink=pending.permalink, detail=detail,
    ))


def run_gated(ctx: JobContext, request: Request,
              handler: Callable[[JobContext, Request], str]) -> str:
    """The hook ``jobs.tasks`` runs every request through: freeze and lock first, then either
    ask for the approvals it still lacks, or re-check an approved one, then run it under the
    service's lock. A request that lacks approvals never reaches ``handler``."""
    locks = Locks(ctx.redis)
    check_gates(locks, request)
    if request.approvals_required > len(request.approved_by):
        return request_approval(ctx, request)
    if request.approvals_required > 0 and not confirm(ctx, request):
        return "voided"
    with service_lock(locks, request):
        result = handler(ctx, request)
    if request.approvals_required > 0:
        finish(ctx, request)
    return result
