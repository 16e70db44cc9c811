"""Per-service locks and the change freeze, as Redis keeps them.

A lock is one Redis key per service (``SET NX``) naming who holds it, for what, since when and
for which request; a retry of the same request (RQ retry, a worker killed mid-job) takes it back
instead of finding itself busy. It carries a long TTL only as a backstop: a stale lock is meant
to be broken with ``/mesh unlock`` (with approval), not to vanish silently mid-change. The guard
that applies locks and freeze to a request is ``jobs.runtime.gates``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import redis
from pydantic import BaseModel, ConfigDict

from jobs.adapters.keys import Keys

LOCK_TTL_S = 6 * 3600
REMOVED_TTL_S = 24 * 3600  # RQ's retries and a takeover are over long before

def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw

T = TypeVar("T")

class Lock(BaseModel):
    model_config = ConfigDict(frozen=True)

    service: str
    request_id: str
    user: str
    what: str  # the command, as the holder typed it
    since: float

class Freeze(BaseModel):
    model_config = ConfigDict(frozen=True)

    request_id: str
    user: str
    since: float

class Locks:
    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.client = client
        self.keys = keys or Keys()

    def get(self, service: str) -> Lock | None:
        raw = self.client.get(self.keys.lock(service))
        return Lock.model_validate_json(raw) if raw else None

    def acquire(self, lock: Lock, ttl_s: int = LOCK_TTL_S) -> Lock | None:
        """Take the lock; None on success, else the lock someone else holds."""
        key = self.keys.lock(lock.service)
        while True:
            if self.client.set(key, lock.model_dump_json(), nx=True, ex=ttl_s):
                return None
            holder = self.get(lock.service)
            if holder is None:
                continue  # released between our SET and GET: try again
            return None if holder.request_id == lock.request_id else holder

    def release(self, service: str, request_id: str) -> bool:
        """Drop the lock only if ``request_id`` still holds it (it may have been broken)."""
        return self._delete_if(service, lambda held: held.request_id == request_id) is not None

    def break_lock(self, service: str, holder_request_id: str, *, by: str) -> Lock | None:
        """Break the lock if the same holder still has it; the lock that was broken, which is
        kept for request ``by`` in the same transaction (``broken_by``)."""
        return self._delete_if(service, lambda held: held.request_id == holder_request_id,
                               remember=self.keys.removed_by(by))

    def broken_by(self, request_id: str) -> Lock | None:
        """The lock request ``request_id`` broke, if it broke one."""
        return self._removed_by(request_id, Lock.model_validate_json)

    def _delete_if(self, service: str, check: Callable[[Lock], bool],
                   remember: str | None = None) -> Lock | None:
        return _delete_if(self.client, self.keys.lock(service), Lock.model_validate_json, check,
                          remember)

    def all(self) -> list[Lock]:
        found = []
        for key in self.client.scan_iter(match=self.keys.lock_pattern, count=500):
            raw = self.client.get(_text(key))
            if raw:
                found.append(Lock.model_validate_json(raw))
        return sorted(found, key=lambda lock: lock.since)

    # -- the freeze ------------------------------------------------------------------------

    def freeze(self) -> Freeze | None:
        raw = self.client.get(self.keys.freeze)
        return Freeze.model_validate_json(raw) if raw else None

    def set_freeze(self, freeze: Freeze) -> Freeze | None:
        """Turn the freeze on; None if it was off, else the freeze already in force."""
        if self.client.set(self.keys.freeze, freeze.model_dump_json(), nx=True):
            return None
        return self.freeze()

    def lift_freeze(self, *, by: str) -> Freeze | None:
        """Lift the freeze; what was lifted, which is kept for request ``by`` in the same
        transaction (``lifted_by``)."""
        return _delete_if(self.client, self.keys.freeze, Freeze.model_validate_json,
                          lambda _held: True, self.keys.removed_by(by))

    def lifted_by(self, request_id: str) -> Freeze | None:
        """The freeze request ``request_id`` lifted, if it lifted one."""
        return self._removed_by(request_id, Freeze.model_validate_json)

    def _removed_by(self, request_id: str, parse: Callable[[bytes | str], T]) -> T | None:
        raw = self.client.get(self.keys.removed_by(request_id))
        return parse(raw) if raw else None

def _delete_if(client: redis.Redis, key: str, parse: Callable[[bytes | str], T],
               check: Callable[[T], bool], remember: str | None = None) -> T | None:
    """Delete ``key`` if what it holds passes ``check``, atomically (WATCH/MULTI); what was
    deleted, or None. ``remember``: a key that keeps what was deleted, written in the same
    transaction (never the deletion without it)."""
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                raw = pipe.get(key)
                held = parse(raw) if raw else None
                if not raw or held is None or not check(held):
                    pipe.unwatch()
                    return None
                pipe.multi()
                pipe.delete(key)
                if remember is not None:
                    pipe.set(remember, raw, ex=REMOVED_TTL_S)
                pipe.execute()
                return held
            except redis.WatchError:
                continue
