"""Where pending approvals live: one JSON document per request message in Redis, changed only
inside a WATCH/MULTI transaction, so two approvers reacting at the same moment on different
gunicorn workers cannot lose a vote or both reach the quorum; an index of open ones by expiry.
How reactions are counted is ``jobs.runtime.approvals``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import redis
from pydantic import ValidationError
from redis.client import Pipeline

from jobs.adapters.keys import Keys
from jobs.domain.approval_rules import ApprovalState, PendingApproval
from meshbot.errors import TemporaryError

T = TypeVar("T")

# Kept after it closes, so a late reaction still finds the request (and is told nothing).
KEEP_AFTER_EXPIRY_S = 7 * 24 * 3600

def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _where(member: object) -> tuple[str, str]:
    """A member of the open set, ``channel ts``."""
    text = member.decode() if isinstance(member, bytes) else str(member)
    channel, _, ts = text.partition(" ")
    return channel, ts

class ApprovalUnreadable(TemporaryError):
    """An approval this meshbot cannot read: most often one a newer meshbot stored during a
    rolling upgrade (a field of its request this version does not know). Left as it is for a
    meshbot that can read it — never rewritten, never guessed at."""

    def __init__(self, channel: str, ts: str, error: ValidationError, raw: bytes | str) -> None:
        first = error.errors()[0] if error.error_count() else {"loc": (), "msg": "unreadable"}
        where = ".".join(map(str, first["loc"])) or "the document"
        super().__init__(f"the approval request {channel}/{ts} cannot be read by this meshbot "
                         f"({where}: {first['msg']}); it is left for one that can", delay=30.0)
        self.channel, self.ts = channel, ts
        self.fingerprint = hash(raw)  # the same record, read again, is the same fingerprint


def _read(channel: str, ts: str, raw: bytes | str) -> PendingApproval:
    try:
        return PendingApproval.model_validate_json(raw)
    except ValidationError as exc:
        raise ApprovalUnreadable(channel, ts, exc, raw) from None


class ApprovalStore:
    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.client = client
        self.keys = keys or Keys()

    def get(self, channel: str, ts: str) -> PendingApproval | None:
        raw = self.client.get(self.keys.approval(channel, ts))
        return _read(channel, ts, raw) if raw else None

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
               then: Callable[[Pipeline, PendingApproval, T], None] | None = None,
               ) -> tuple[PendingApproval, T] | None:
        """Apply ``change`` atomically; None when there is no such approval.

        ``then`` adds writes that must land with the change or not at all (the approved work's
        enqueue: a quorum recorded without its job would never run), into the same MULTI."""
        key = self.keys.approval(channel, ts)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.get(key)
                    if not raw:
                        pipe.unwatch()
                        return None
                    current = _read(channel, ts, raw)
                    updated, result = change(current)
                    if updated == current:
                        pipe.unwatch()
                        return current, result
                    ttl = pipe.ttl(key)
                    pipe.multi()
                    pipe.set(key, updated.model_dump_json(),
                             ex=int(ttl) if ttl and int(ttl) > 0 else KEEP_AFTER_EXPIRY_S)
                    member = f"{channel} {ts}"
                    if updated.state.expires:  # collecting, or its approved work waiting
                        pipe.zadd(self.keys.approvals_open, {member: updated.expires_at})
                    else:
                        pipe.zrem(self.keys.approvals_open, member)
                    if then is not None:
                        then(pipe, updated, result)
                    pipe.execute()
                    return updated, result
                except redis.WatchError:
                    continue

    def due(self, now: float, limit: int = 1000) -> list[tuple[str, str]]:
        """(channel, ts) of open (or waiting) approvals whose expiry has come."""
        members = self.client.zrangebyscore(self.keys.approvals_open, "-inf", now,
                                            start=0, num=limit)
        return [_where(member) for member in members]

    def waiting(self, now: float, limit: int = 1000,
                ) -> tuple[list[PendingApproval], list[ApprovalUnreadable]]:
        """Approved requests whose work waits for an obstacle to go, not yet expired, and the
        open approvals this meshbot could not read; one round trip for the index, one for the
        documents."""
        members = self.client.zrangebyscore(self.keys.approvals_open, f"({now}", "+inf",
                                            start=0, num=limit)
        if not members:
            return [], []
        places = [_where(m) for m in members]
        raws = self.client.mget([self.keys.approval(*where) for where in places])
        found: list[PendingApproval] = []
        unreadable: list[ApprovalUnreadable] = []
        for (channel, ts), raw in zip(places, raws, strict=True):
            if not raw:
                continue
            try:
                found.append(_read(channel, ts, raw))
            except ApprovalUnreadable as exc:
                unreadable.append(exc)
        return [p for p in found if p.state is ApprovalState.WAITING], unreadable

    def open_count(self) -> int:
        return int(self.client.zcard(self.keys.approvals_open))
