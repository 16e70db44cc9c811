"""The worker's side of approvals: post the request, re-check it at quorum, report, expire.

``jobs.tasks.handle_request`` sends here every request that still lacks approvals (it never
reaches its handler), and every approved one before its handler runs. The reactions themselves
are counted by the bot (``jobs.approvals.react``); the jobs below only say what happened.

Approvers are never asked for work that would then be refused: the gates (freeze, lock) and
the handler's own preconditions (``approval_plan.compose``) refuse at once, before the request
is posted. At quorum the gates are checked again; an obstacle that goes away (a lock, the
freeze) does not spend the approvals: the request waits, says what for, and the ticker's sweep
runs it once the obstacle is gone, until the request's expiry. Any other refusal at quorum
closes the request saying the approvals were not used.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from redis.client import Pipeline
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from jobs.adapters.approval_store import ApprovalStore, ApprovalUnreadable
from jobs.adapters.audit import AuditEntry
from jobs.adapters.locks import Locks
from jobs.domain.approval_rules import ApprovalState, PendingApproval, changed_facts, expire
from jobs.runtime import context
from jobs.runtime.approvals import RETRY, enqueue_approved, enqueue_refresh
from jobs.runtime.bluegreen_cutover import CUTOVER, THREAD
from jobs.runtime.context import JobContext
from jobs.runtime.gates import Blocked, check_gates, service_lock
from jobs.runtime.handlers.approval_plan import compose, facts_now
from jobs.runtime.handlers.common import end_overtaken, thread_of
from jobs.runtime.reports import report
from jobs.runtime.unreadable import read_request
from jobs.runtime.weights import Abandoned, Overtaken
from meshbot import cluster_scope
from meshbot.commands import Request
from meshbot.errors import (
    GitOpsOwned,
    MeshbotError,
    MeshInvalid,
    MeshNotFound,
    TemporaryError,
    UserError,
)
from rendering import approvals as approval_text
from rendering import routing as routing_text

log = logging.getLogger("meshbot.approvals")

EXPIRE_TASK = "jobs.runtime.handlers.approvals.expire_job"
REQUEST_TASK = "jobs.runtime.handlers.approvals.request_job"
# The ticker's approval request that Slack did not take is posted by a job, retried as Slack
# asks and for longer than a command's: about half an hour, Slack's Retry-After stretching each.
LATER = Retry(max=12, interval=[1, 2, 4, 8, 16, 30, 60, 60, 120, 300, 600, 900])


def request_approval(ctx: JobContext, request: Request) -> str:
    """Post the approval request in the channel (in a thread when the request names one:
    meshbot's own requests go where their work is told) and keep it in Redis until it is
    answered."""
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
    thread = request.command.options.get(THREAD)
    ts = (ctx.notifier.reply(request.channel, thread, render(ctx, pending)) if thread
          else ctx.notifier.post_root(request.channel, render(ctx, pending)))
    pending = pending.model_copy(
        update={"ts": ts, "permalink": ctx.notifier.link(request.channel, ts)})
    store.create(pending)
    Queue(ctx.settings.queue_name, connection=ctx.redis, serializer=JSONSerializer).enqueue_in(
        timedelta(seconds=ttl), EXPIRE_TASK, request.channel, ts,
        job_id="expire-" + hashlib.sha256(f"{request.channel} {ts}".encode()).hexdigest()[:32],
        retry=RETRY, result_ttl=600, failure_ttl=24 * 3600,
    )
    _audit(ctx, pending, request.user, "approval requested", detail=plan.text)
    return "awaiting approval"


def request_approval_from_tick(ctx: JobContext, request: Request) -> str:
    """``request_approval`` for the ticker (a step that needs approvers). The rollout waits
    for approvals from now on, so someone must be able to give them: when Slack does not take
    the request now, a job posts it, retried until Slack does (once: the job's id is the
    request's, and ``request_approval`` posts a request once)."""
    try:
        return request_approval(ctx, request)
    except TemporaryError as exc:
        log.warning("Slack did not take the approval request %s (%s): a job posts it",
                    request.id, exc.message)
        Queue(ctx.settings.queue_name, connection=ctx.redis, serializer=JSONSerializer
              ).enqueue_call(
            REQUEST_TASK, args=(request.model_dump(mode="json"),),
            job_id="ask-" + hashlib.sha256(request.id.encode()).hexdigest()[:32],
            retry=LATER, result_ttl=600, failure_ttl=7 * 24 * 3600)
        return "approval request to be posted"


def request_job(payload: dict[str, Any]) -> str:
    request = read_request(payload)
    if request is None:
        return "unreadable"
    with cluster_scope.scope(request.command.cluster):
        return request_approval(context.current().for_cluster(request.command.cluster), request)


def confirm(ctx: JobContext, request: Request) -> bool:
    """Whether an approved request may run now; voids it (and says so) if the target changed.

    The payload's ``approved_by`` is not trusted on its own: the stored approval must be in the
    approved state with the same approvers. A retry of a job that already passed this check
    (``started``) is let through, since its own first attempt may have changed the facts.
    """
    store = ApprovalStore(ctx.redis)
    pending = _approved(store, request)
    if pending is None:
        return False
    if pending.started:
        return True
    changes = changed_facts(pending.precondition,
                            facts_now(ctx, request, was=pending.precondition))
    if changes:
        text = approval_text.approval_voided(changes)
        result = store.update(pending.channel, pending.ts, lambda p: (p.model_copy(
            update={"state": ApprovalState.VOIDED, "detail": text}), None))
        # Audited and told before the request message is edited: a Slack failure there must
        # not leave a voided request that nobody heard of (its retry would find it voided).
        _audit(ctx, result[0] if result else pending, "meshbot", "voided", detail=text)
        _tell(ctx, request, text)
        _refresh_quietly(ctx, pending.channel, pending.ts)
        return False
    return True


def _refresh_quietly(ctx: JobContext, channel: str, ts: str) -> None:
    """Edit the request message to its state; a Slack failure is logged, the state stands."""
    try:
        refresh(ctx, channel, ts)
    except MeshbotError as exc:
        log.warning("approval request %s/%s not updated in Slack: %s", channel, ts, exc.message)


def _approved(store: ApprovalStore, request: Request) -> PendingApproval | None:
    """The stored approval that lets ``request`` run, or None (logged)."""
    pending = store.for_request(request.id)
    if pending is None or pending.state is not ApprovalState.APPROVED or \
            set(pending.approvals) != set(request.approved_by) or \
            len(pending.approvals) < pending.required:
        log.warning("approved request %s has no matching approval (%s); not run", request.id,
                    pending.state if pending else "missing")
        return None
    return pending


def _started(ctx: JobContext, request: Request) -> None:
    """The approved work holds its lock and begins: a retry skips the facts' re-check."""
    store = ApprovalStore(ctx.redis)
    pending = store.for_request(request.id)
    if pending is not None and not pending.started:
        store.update(pending.channel, pending.ts,
                     lambda p: (p.model_copy(update={"started": True}), None))


def wait(ctx: JobContext, request: Request, blocked: Blocked) -> str:
    """Approved work that a lock or the freeze keeps from running now: the approvals are kept,
    the request says what it waits for, and ``resume_waiting`` runs it once that is gone."""
    store = ApprovalStore(ctx.redis)
    pending = _approved(store, request)
    if pending is None:
        return "not run"

    def park(p: PendingApproval) -> tuple[PendingApproval, bool]:
        if p.state is not ApprovalState.APPROVED:
            return p, False
        return p.model_copy(update={"state": ApprovalState.WAITING,
                                    "waiting_for": blocked.waiting}), True

    result = store.update(pending.channel, pending.ts, park)
    if result is None or not result[1]:
        return "not run"
    _audit(ctx, result[0], "meshbot", "waiting", detail=blocked.message)
    if not expire_one(ctx, pending.channel, pending.ts, time.time()):
        refresh(ctx, pending.channel, pending.ts)
    return "waiting"


def resume_waiting(ctx: JobContext, now: float) -> int:
    """Enqueue the approved work of every waiting request whose obstacle is gone (each once:
    the state moves back to approved in one transaction); how many."""
    store = ApprovalStore(ctx.redis)
    resumed = 0
    waiting, unreadable = store.waiting(now)
    for each in unreadable:
        _left_unread(each)
    for pending in waiting:
        # Approvals are found from Slack alone; the lock they wait for is their cluster's.
        cluster = pending.request.command.cluster
        with cluster_scope.scope(cluster):
            try:
                check_gates(Locks(ctx.redis), pending.request,
                            _namespace(ctx, pending.request))
            except Blocked as exc:
                _still_waiting(ctx.for_cluster(cluster), pending, exc.waiting)
                continue

        def go(p: PendingApproval) -> tuple[PendingApproval, bool]:
            if p.state is not ApprovalState.WAITING or now >= p.expires_at:
                return p, False
            return p.model_copy(update={"state": ApprovalState.APPROVED, "waiting_for": "",
                                        "runs": p.runs + 1}), True

        def enqueue(pipe: Pipeline, p: PendingApproval, going: bool) -> None:
            if going:  # the enqueue lands with the state it runs from, or neither does
                enqueue_approved(ctx.redis, p, ctx.settings.queue_name, pipe)

        result = store.update(pending.channel, pending.ts, go, then=enqueue)
        if result is None or not result[1]:
            continue
        _audit(ctx, result[0], "meshbot", "resumed", detail=f"waited: {pending.waiting_for}")
        refresh_now_or_later(ctx, pending.channel, pending.ts)
        resumed += 1
    return resumed


def _still_waiting(ctx: JobContext, pending: PendingApproval, waiting_for: str) -> None:
    """Another obstacle now (a new holder, a freeze): the message says the current one."""
    if waiting_for == pending.waiting_for:
        return
    result = ApprovalStore(ctx.redis).update(
        pending.channel, pending.ts, lambda p: (p.model_copy(update={"waiting_for": waiting_for})
                                                if p.state is ApprovalState.WAITING else p, None))
    if result is not None and result[0].state is ApprovalState.WAITING:
        ctx.notifier.update(pending.channel, pending.ts, render(ctx, result[0]))


def not_used(ctx: JobContext, request: Request, reason: str) -> None:
    """The approved work was refused when it ran: the request closes saying its approvals were
    not used (and why), so nobody takes them for spent on a change that never happened."""
    store = ApprovalStore(ctx.redis)
    pending = store.for_request(request.id)
    if pending is None or pending.state is not ApprovalState.APPROVED:
        return
    text = approval_text.approval_not_used(pending.approvals, reason)
    result = store.update(pending.channel, pending.ts, lambda p: (p.model_copy(
        update={"state": ApprovalState.VOIDED, "detail": text})
        if p.state is ApprovalState.APPROVED else p, None))
    _audit(ctx, result[0] if result else pending, "meshbot", "not used", detail=reason)
    _refresh_quietly(ctx, pending.channel, pending.ts)


def finish(ctx: JobContext, request: Request) -> None:
    """The approved work ran: mark it done and name the approvers in the work's thread."""
    store = ApprovalStore(ctx.redis)
    pending = store.for_request(request.id)
    if pending is None:
        return
    channel, ts = thread_of(ctx, request)
    link = pending.thread_link or (ctx.notifier.link(channel, ts) if channel and ts else None)
    store.update(pending.channel, pending.ts, lambda p: (p.model_copy(
        update={"state": ApprovalState.DONE, "thread_link": link}), None))
    refresh(ctx, pending.channel, pending.ts)
    if channel and ts and (channel, ts) != (pending.channel, pending.ts):
        # Owed when Slack does not take it: a retry of this job finds its approval done and
        # ends at once ("no matching approval"), so a failure here would lose the line.
        report(ctx, channel, ts, approval_text.approved_by(pending.approvals, pending.permalink))


def render(ctx: JobContext, pending: PendingApproval) -> str:
    ttl = pending.expires_at - pending.created_at
    status = {
        ApprovalState.OPEN: lambda: approval_text.approval_progress(pending.approvals,
                                                               pending.required),
        ApprovalState.APPROVED: lambda: approval_text.approval_approved(pending.approvals),
        ApprovalState.REJECTED: lambda: approval_text.approval_rejected(pending.closed_by or ""),
        ApprovalState.WAITING: lambda: approval_text.approval_waiting(
            pending.approvals, pending.waiting_for, pending.expires_at),
        ApprovalState.EXPIRED: lambda: render_status(pending),
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
    command = pending.request.command
    if command.options.get(CUTOVER) and state in (ApprovalState.REJECTED, ApprovalState.EXPIRED):
        # A blue-green whose cutover was not approved is left at 90/10: say what to do next.
        text += "\n" + routing_text.bluegreen_ask_again(command.target or "")
    ctx.notifier.reply(channel, ts, text)
    if state in (ApprovalState.REJECTED, ApprovalState.EXPIRED, ApprovalState.WAITING):
        _tell(ctx, pending.request, text)
    store.update(channel, ts, lambda p: (p.model_copy(update={"announced": state}), None))
    return state.value


def render_status(pending: PendingApproval) -> str:
    if pending.state is ApprovalState.REJECTED:
        return approval_text.approval_rejected(pending.closed_by or "")
    ttl = pending.expires_at - pending.created_at
    if pending.state is ApprovalState.EXPIRED and pending.waiting_for:
        return approval_text.approval_expired_waiting(ttl, pending.approvals,
                                                      pending.waiting_for)
    if pending.state is ApprovalState.EXPIRED:
        return approval_text.approval_expired(ttl, pending.approvals, pending.required)
    if pending.state is ApprovalState.WAITING:
        return approval_text.approval_waiting(pending.approvals, pending.waiting_for,
                                              pending.expires_at)
    if pending.state is ApprovalState.VOIDED:
        return pending.detail
    return approval_text.approval_approved(pending.approvals)


def expire_one(ctx: JobContext, channel: str, ts: str, now: float) -> bool:
    """Expire the approval if it is still open at ``now``; True if it expired now."""
    store = ApprovalStore(ctx.redis)
    result = store.update(channel, ts, lambda p: ((expire(p, now) or p), expire(p, now)))
    if result is None or result[1] is None:
        return False
    expired = result[0]
    detail = (f"approved by {len(expired.approvals)}, not used; waited: {expired.waiting_for}"
              if expired.waiting_for else
              f"{len(expired.approvals)} of {expired.required} approvals")
    _audit(ctx, expired, "meshbot", "expired", detail=detail)
    refresh_now_or_later(ctx, channel, ts)
    return True


def refresh_now_or_later(ctx: JobContext, channel: str, ts: str) -> None:
    """``refresh`` after a change of the approval's state that is already stored (expired,
    resumed): Slack not taking it now, a job does it (retried as Slack asks) — else the change
    would never be shown or said, as nothing changes the state again."""
    try:
        refresh(ctx, channel, ts)
    except TemporaryError as exc:
        log.warning("the approval %s/%s is shown by a job: Slack did not take it now (%s)",
                    channel, ts, exc.message)
        enqueue_refresh(ctx.redis, channel, ts, ctx.settings.queue_name)


def expire_due(ctx: JobContext, now: float) -> int:
    """Expire every open (or waiting) approval past its TTL; how many. One this meshbot cannot
    read is left for one that can: it never stops the others'."""
    expired = 0
    for channel, ts in ApprovalStore(ctx.redis).due(now):
        try:
            expired += expire_one(ctx, channel, ts, now)
        except ApprovalUnreadable as exc:
            _left_unread(exc)
    return expired


# The unreadable approvals already said in this process's log (the sweep meets them each tick).
_SAID_UNREADABLE: set[tuple[str, str, int]] = set()


def _left_unread(exc: ApprovalUnreadable) -> None:
    seen = (exc.channel, exc.ts, exc.fingerprint)
    if seen in _SAID_UNREADABLE:
        return
    if len(_SAID_UNREADABLE) > 10_000:  # bounded: a long life meets many upgrades
        _SAID_UNREADABLE.clear()
    _SAID_UNREADABLE.add(seen)
    log.warning("%s", exc.message)


def sweep(ctx: JobContext, now: float) -> int:
    """The ticker's approval duty: expire what is due, then run the waiting work whose
    obstacle is gone; how many requests it moved."""
    return expire_due(ctx, now) + resume_waiting(ctx, now)


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

def _namespace(ctx: JobContext, request: Request) -> str | None:
    """The namespace of the request's service (where a migration may be moving it)."""
    view = ctx.policy.service(request.command.target or "")
    return view.namespace if view is not None else None


def _tell(ctx: JobContext, request: Request, text: str) -> None:
    try:
        ctx.notifier.ephemeral(text, response_url=request.response_url, channel=request.channel,
                               user=request.user)
    except MeshbotError as exc:
        log.warning("could not tell %s: %s", request.user, exc.message)


def _audit(ctx: JobContext, pending: PendingApproval, actor: str, outcome: str,
           detail: str = "") -> None:
    command = pending.request.command
    ctx.for_cluster(command.cluster).audit.record(AuditEntry(  # the audit of its cluster
        actor=actor, action=command.verb.value, target=command.target, outcome=outcome,
        request_id=pending.request.id, approvers=pending.approvals,
        permalink=pending.permalink, detail=detail,
    ))


# What a handler refuses with (``jobs.tasks`` tells them as refusals); at quorum they close the
# request with its approvals not used.
_REFUSALS = (UserError, MeshNotFound, MeshInvalid, GitOpsOwned, Abandoned)


def run_gated(ctx: JobContext, request: Request,
              handler: Callable[[JobContext, Request], str]) -> str:
    """The hook ``jobs.tasks`` runs every request through: freeze and lock first, then either
    ask for the approvals it still lacks (its preconditions checked first), or re-check an
    approved one, then run it under the service's lock. A request that lacks approvals never
    reaches ``handler``; an approved one blocked by the freeze or a lock waits."""
    locks = Locks(ctx.redis)
    lacking = request.approvals_required > len(request.approved_by)
    approved = request.approvals_required > 0 and not lacking
    try:
        check_gates(locks, request, _namespace(ctx, request))
        if lacking:
            return request_approval(ctx, request)
        if approved and not confirm(ctx, request):
            return "voided"
        with service_lock(locks, request):
            if approved:
                _started(ctx, request)
            try:
                result = handler(ctx, request)
            except Overtaken as exc:
                # A rollback accepted after this request won at its commit (or after its write,
                # which it put back): it ends here, its approvals not spent.
                if approved:
                    not_used(ctx, request, approval_text.overtaken(request.command.target))
                return end_overtaken(ctx, request, exc.channel, exc.ts, exc.message)
            except _REFUSALS as exc:
                if approved:
                    not_used(ctx, request, exc.message)
                raise
    except Blocked as exc:  # only the gates raise it: the handler did not run
        if not approved:
            raise
        return wait(ctx, request, exc)
    if approved:
        finish(ctx, request)
    return result
