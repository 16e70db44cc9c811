"""Pending approvals in Redis, and the counting of reactions on them (the bot's side).

The bot calls ``react`` (through ``jobs.api``) for every ``reaction_added``/``reaction_removed``;
it touches only Redis and RQ, never the cluster. Each approval is one JSON document under its
Slack message, changed only inside a WATCH/MULTI transaction, so two approvers reacting at the
same moment on different gunicorn workers cannot lose a vote or both reach the quorum. When
the quorum is reached the work is enqueued once (RQ ``unique`` job id derived from the request);
everything a person sees about it (the updated request message, the thread) is posted by a job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import TypeVar

import redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.serializers import JSONSerializer

from jobs.approval_rules import (
    PendingApproval,
    Reaction,
    Verdict,
    judge,
    may_approve,
)
from jobs.audit import AuditEntry, AuditLog
from jobs.keys import Keys
from policies.policy import Policy

T = TypeVar("T")
GroupsOf = Callable[[str, Iterable[str]], frozenset[str]]

# Kept after it closes, so a late reaction still finds the request (and is told nothing).
KEEP_AFTER_EXPIRY_S = 7 * 24 * 3600
REQUEST_TASK = "jobs.tasks.handle_request"
REFRESH_TASK = "jobs.handlers.approvals.refresh_job"
RETRY = Retry(max=5, interval=[1, 2, 4, 8, 16])
URGENT_SUFFIX = "-urgent"


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class ApprovalStore:
    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.client = client
        self.keys = keys or Keys()

    def get(self, channel: str, ts: str) -> PendingApproval | None:
        raw = self.client.get(self.keys.approval(channel, ts))
        return PendingApproval.model_validate_json(raw) if raw else None

    def for_request(self, request_id: str) -> PendingApproval | None:
        where = self.client.get(self.keys.approval_for(request_id))
        if not where:
            return None
        channel, _, ts = _text(where).partition(" ")
        return self.get(channel, ts)

    def create(self, pending: PendingApproval) -> None:
        ttl = int(max(1.0, pending.expires_at - pending.created_at)) + KEEP_AFTER_EXPIRY_S
        member = f"{pending.channel} {pending.ts}"
        with self.client.pipeline() as pipe:
            pipe.set(self.keys.approval(pending.channel, pending.ts),
                     pending.model_dump_json(), ex=ttl)
            pipe.set(self.keys.approval_for(pending.request.id), member, ex=ttl)
            pipe.zadd(self.keys.approvals_open, {member: pending.expires_at})
            pipe.execute()

    def update(self, channel: str, ts: str,
               change: Callable[[PendingApproval], tuple[PendingApproval, T]],
               ) -> tuple[PendingApproval, T] | None:
        """Apply ``change`` atomically; None when there is no such approval."""
        key = self.keys.approval(channel, ts)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.get(key)
                    if not raw:
                        pipe.unwatch()
                        return None
                    current = PendingApproval.model_validate_json(raw)
                    updated, result = change(current)
                    if updated == current:
                        pipe.unwatch()
                        return current, result
                    ttl = pipe.ttl(key)
                    pipe.multi()
                    pipe.set(key, updated.model_dump_json(),
                             ex=int(ttl) if ttl and int(ttl) > 0 else KEEP_AFTER_EXPIRY_S)
                    if updated.state.closed:
                        pipe.zrem(self.keys.approvals_open, f"{channel} {ts}")
                    pipe.execute()
                    return updated, result
                except redis.WatchError:
                    continue

    def due(self, now: float, limit: int = 1000) -> list[tuple[str, str]]:
        """(channel, ts) of open approvals whose expiry has come."""
        members = self.client.zrangebyscore(self.keys.approvals_open, "-inf", now,
                                            start=0, num=limit)
        found = []
        for member in members:
            text = member.decode() if isinstance(member, bytes) else str(member)
            channel, _, ts = text.partition(" ")
            found.append((channel, ts))
        return found

    def open_count(self) -> int:
        return int(self.client.zcard(self.keys.approvals_open))


def approved_job_id(request_id: str) -> str:
    """RQ job id of the approved work: one per request, so it is enqueued at most once."""
    return "approved-" + hashlib.sha256(request_id.encode()).hexdigest()[:32]


def enqueue_approved(client: redis.Redis, pending: PendingApproval, queue: str) -> bool:
    """Enqueue the request with its approvers; False when it was enqueued already."""
    request = pending.request.model_copy(update={"approved_by": pending.approvals})
    name = queue + URGENT_SUFFIX if request.command.verb.value in ("emergency",) else queue
    try:
        Queue(name, connection=client, serializer=JSONSerializer).enqueue(
            REQUEST_TASK, request.model_dump(mode="json"), job_id=approved_job_id(request.id),
            unique=True, retry=RETRY, job_timeout=120, result_ttl=3600,
            failure_ttl=7 * 24 * 3600,
        )
    except DuplicateJobError:
        return False
    return True


def enqueue_refresh(client: redis.Redis, channel: str, ts: str, queue: str) -> None:
    """A job re-renders the approval message and tells the thread what changed."""
    Queue(queue, connection=client, serializer=JSONSerializer).enqueue(
        REFRESH_TASK, channel, ts, retry=RETRY, job_timeout=60, result_ttl=600,
        failure_ttl=24 * 3600,
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
    result = store.update(reaction.channel, reaction.ts, lambda p: judge(
        p, reaction, approver=is_approver, approve_emoji=settings.approve_emoji,
        reject_emoji=settings.reject_emoji, now=now))
    if result is None:
        return Verdict.NOT_A_REQUEST
    updated, verdict = result
    if verdict.audited:
        _audit(client, keys, updated, reaction, verdict)
    if verdict is Verdict.QUORUM:
        enqueue_approved(client, updated, queue)
    if verdict.changes_message:
        enqueue_refresh(client, reaction.channel, reaction.ts, queue)
    return verdict


def _audit(client: redis.Redis, keys: Keys | None, pending: PendingApproval,
           reaction: Reaction, verdict: Verdict) -> None:
    outcome, detail = _OUTCOMES[verdict]
    command = pending.request.command
    if verdict in (Verdict.REQUESTER, Verdict.NOT_APPROVER):
        detail = f"{detail} (:{reaction.emoji}: {'added' if reaction.added else 'removed'})"
    AuditLog(client, keys).record(AuditEntry(
        actor=reaction.user, action=command.verb.value, target=command.target,
        outcome=outcome, request_id=pending.request.id, approvers=pending.approvals,
        permalink=pending.permalink, detail=detail.strip(),
    ))
