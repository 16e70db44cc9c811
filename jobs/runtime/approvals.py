"""Counting reactions on pending approvals (the bot's side, through ``jobs.runtime.api``).

The bot calls ``react`` for every ``reaction_added``/``reaction_removed``; it touches only Redis
and RQ, never the cluster. When the quorum is reached the work is enqueued once (its RQ job id
derived from the request); everything a person sees about it (the updated request message, the
thread) is posted by a job. The documents themselves are ``jobs.adapters.approval_store``'s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

import redis
from redis.client import Pipeline
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from jobs.adapters.approval_store import ApprovalStore
from jobs.adapters.audit import AuditEntry, AuditLog
from jobs.adapters.keys import Keys
from jobs.domain.approval_rules import PendingApproval, Reaction, Verdict, judge, may_approve
from jobs.runtime.retry import SCHEDULE
from policies.policy import Policy

GroupsOf = Callable[[str, Iterable[str]], frozenset[str]]

REQUEST_TASK = "jobs.runtime.tasks.handle_request"

REFRESH_TASK = "jobs.runtime.handlers.approvals.refresh_job"

RETRY = Retry(max=len(SCHEDULE), interval=list(SCHEDULE))

URGENT_SUFFIX = "-urgent"

def approved_job_id(request_id: str, run: int = 1) -> str:
    """RQ job id of the approved work: one per request and run, so each is enqueued at most
    once (a later run: the work waited for a lock or the freeze, or its quorum was reached
    again after a withdrawal)."""
    base = "approved-" + hashlib.sha256(request_id.encode()).hexdigest()[:32]
    return base if run <= 1 else f"{base}-{run}"

def enqueue_approved(client: redis.Redis, pending: PendingApproval, queue: str,
                     pipeline: Pipeline) -> None:
    """Enqueue the request with its approvers, into the transaction that records the state it
    runs from (approved): the two land together, and only once (the transaction watches the
    approval, so a second quorum on the same run cannot commit)."""
    request = pending.request.model_copy(update={"approved_by": pending.approvals})
    name = queue + URGENT_SUFFIX if request.command.verb.value in ("emergency",) else queue
    Queue(name, connection=client, serializer=JSONSerializer).enqueue_call(
        REQUEST_TASK, args=(request.model_dump(mode="json"),),
        job_id=approved_job_id(request.id, pending.runs),
        retry=RETRY, timeout=120, result_ttl=3600, failure_ttl=7 * 24 * 3600,
        pipeline=pipeline,
    )


def enqueue_refresh(client: redis.Redis, channel: str, ts: str, queue: str,
                    pipeline: Pipeline | None = None) -> None:
    """A job re-renders the approval message and tells the thread what changed."""
    Queue(queue, connection=client, serializer=JSONSerializer).enqueue_call(
        REFRESH_TASK, args=(channel, ts), retry=RETRY, timeout=60, result_ttl=600,
        failure_ttl=24 * 3600, pipeline=pipeline,
    )

_OUTCOMES = {
    Verdict.REQUESTER: ("ignored", "the requester's own reaction does not count"),
    Verdict.NOT_APPROVER: ("ignored", "not an approver for this request"),
    Verdict.COUNTED: ("approval", ""),
    Verdict.QUORUM: ("approved", "quorum reached; the work is enqueued"),
    Verdict.WITHDRAWN: ("approval withdrawn", ""),
    Verdict.REJECTED: ("rejected", ""),
    Verdict.EXPIRED: ("ignored", "the request has expired"),
    Verdict.CLOSED: ("ignored", "the request is closed"),
}

def react(client: redis.Redis, reaction: Reaction, *, policy: Policy, groups_of: GroupsOf,
          queue: str, now: float, keys: Keys | None = None) -> Verdict:
    """Count one reaction event on an approval request; what it did."""
    store = ApprovalStore(client, keys)
    pending = store.get(reaction.channel, reaction.ts)
    if pending is None:
        return Verdict.NOT_A_REQUEST
    settings = policy.approvals

    def approver() -> bool:
        # Resolve user groups only for reactions that can matter: every emoji in a busy
        # channel must not cost a usergroups.users.list call.
        groups = [m for m in pending.eligible if m.startswith("S")]
        member_of = groups_of(reaction.user, groups) if groups else frozenset()
        return may_approve(reaction.user, pending.eligible, member_of)

    is_approver = False
    if reaction.emoji.split("::", 1)[0] in (settings.approve_emoji, settings.reject_emoji):
        is_approver = reaction.user != pending.request.user and approver()
    committed: list[AuditEntry | None] = []

    def with_the_change(pipe: Pipeline, updated: PendingApproval, verdict: Verdict) -> None:
        # What the reaction did lands in the transaction that records it: its audit entry,
        # the approved work, the message's refresh. A lost answer or a cut connection then
        # leaves all of them or none, and Slack's retry of the event finds the count done.
        committed[:] = [_entry(updated, reaction, verdict) if verdict.audited else None]
        if committed[0] is not None:
            _audit_log(client, keys, updated).write(pipe, committed[0])
        if verdict is Verdict.QUORUM:
            enqueue_approved(client, updated, queue, pipe)
        if verdict.changes_message:
            enqueue_refresh(client, reaction.channel, reaction.ts, queue, pipe)

    result = store.update(reaction.channel, reaction.ts, lambda p: judge(
        p, reaction, approver=is_approver, approve_emoji=settings.approve_emoji,
        reject_emoji=settings.reject_emoji, now=now), then=with_the_change)
    if result is None:
        return Verdict.NOT_A_REQUEST
    updated, verdict = result
    if committed:
        if committed[0] is not None:
            AuditLog.logged(committed[0])
        return verdict
    # The document did not change (a reaction already counted): nothing was written with it.
    if verdict.audited:
        _audit_log(client, keys, updated).record(_entry(updated, reaction, verdict))
    if verdict.changes_message:
        enqueue_refresh(client, reaction.channel, reaction.ts, queue)
    return verdict

def _audit_log(client: redis.Redis, keys: Keys | None, pending: PendingApproval) -> AuditLog:
    # The approval is found from Slack alone; its entry goes to the audit of its cluster.
    return AuditLog(client, keys or Keys(cluster=pending.request.command.cluster))


def _entry(pending: PendingApproval, reaction: Reaction, verdict: Verdict) -> AuditEntry:
    outcome, detail = _OUTCOMES[verdict]
    command = pending.request.command
    if verdict in (Verdict.REQUESTER, Verdict.NOT_APPROVER):
        detail = f"{detail} (:{reaction.emoji}: {'added' if reaction.added else 'removed'})"
    return AuditEntry(
        actor=reaction.user, action=command.verb.value, target=command.target,
        outcome=outcome, request_id=pending.request.id, approvers=pending.approvals,
        permalink=pending.permalink, detail=detail.strip(),
    )
