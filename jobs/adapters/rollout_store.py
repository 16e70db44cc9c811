"""Rollout state in Redis: one JSON document per service, changed only inside a transaction.

A rollback and an analysis tick may race on the same rollout; ``update`` retries on a concurrent
change (WATCH/MULTI), so neither overwrites the other blindly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import redis
from pydantic import ValidationError

from jobs.adapters.keys import Keys
from jobs.domain.rollout import Rollout
from jobs.domain.routes import Weights

log = logging.getLogger("meshbot.store")

TICK_OWNER = "tick"  # the analysis tick writes weights too; any other owner is an RQ job id
_CLEAR_IF_OWNER = """
if redis.call('hget', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('zrem', KEYS[1], ARGV[1])
redis.call('hdel', KEYS[2], ARGV[1])
return 1
"""

# Move a mark's time on (only while it is still the owner's): the reconcile looks at a mark by
# its time, so a writer told to wait is not written for before the wait is over.
_DEFER_IF_OWNER = """
if redis.call('hget', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
return redis.call('zadd', KEYS[1], 'XX', 'GT', 'CH', ARGV[3], ARGV[1])
"""

# Set an undecodable document aside only if it is still the one read: a writer (a rollback's
# new state, say) that came between the read and this is kept, not deleted with it.
_SET_ASIDE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('set', KEYS[2], ARGV[1])
redis.call('del', KEYS[1])
redis.call('zrem', KEYS[3], ARGV[2])
return 1
"""

# Write the new state only if the stored one is still what was read (compare-and-set), keeping
# the watched set in step; many of these go to Redis in one pipelined round trip.
_CAS = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('set', KEYS[1], ARGV[2])
if ARGV[3] == '1' then
  redis.call('zadd', KEYS[2], ARGV[4], ARGV[5])
else
  redis.call('zrem', KEYS[2], ARGV[5])
end
return 1
"""


def _score(rollout: Rollout) -> float:
    """When the tick should next read the rollout: at its next check, or at once when its
    step's comparison needs a baseline (the counters as the step begins)."""
    return 0.0 if rollout.needs_baseline else rollout.next_check_at


class RolloutStore:
    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.client = client
        self.keys = keys or Keys()
        self._cas = client.register_script(_CAS)
        self._clear_if_owner = client.register_script(_CLEAR_IF_OWNER)
        self._defer_if_owner = client.register_script(_DEFER_IF_OWNER)
        self._set_aside = client.register_script(_SET_ASIDE)
        # The last document read of each service and its model: the tick reads every watched
        # rollout at every tick, and most documents have not changed since the last one.
        self._parsed: dict[str, tuple[bytes, Rollout]] = {}

    def get_many(self, services: list[str]) -> dict[str, tuple[bytes, Rollout]]:
        """The stored documents (as read, for ``commit_many``) of these services, one round
        trip; services without a rollout are left out."""
        if not services:
            return {}
        raws = self.client.mget([self.keys.rollout(s) for s in services])
        found: dict[str, tuple[bytes, Rollout]] = {}
        for service, raw in zip(services, raws, strict=True):
            if not raw:
                self._parsed.pop(service, None)
                continue
            document = raw if isinstance(raw, bytes) else str(raw).encode()
            known = self._parsed.get(service)
            if known is not None and known[0] == document:  # unchanged: the same (frozen) model
                found[service] = known
                continue
            try:
                found[service] = (document, Rollout.model_validate_json(document))
            except ValidationError as exc:
                # One bad record must not stop the tick for everyone: set it aside, once.
                self.set_aside(service, document, str(exc))
                continue
            self._parsed[service] = found[service]
        return found

    def set_aside(self, service: str, document: bytes, why: str) -> bool:
        """Move an undecodable rollout out of the analysis (kept under ``…:undecodable`` for a
        person to read), and say so in the log once. Only ``document`` as it was read: if the
        record was written since (a rollback saving its state), that write stays and nothing is
        set aside. True if it was."""
        key = self.keys.rollout(service)
        if not self._set_aside(keys=[key, key + ":undecodable", self.keys.watched],
                               args=[document, service]):
            log.info("rollout record of %s changed since it was read as undecodable; kept",
                     service, extra={"service": service})
            return False
        log.error("rollout record of %s is undecodable and was set aside (%s): %s", service,
                  key + ":undecodable", why.splitlines()[0], extra={"service": service})
        return True

    def commit_many(self, changes: list[tuple[bytes, Rollout]]) -> list[bool]:
        """Write each new rollout unless its document changed since it was read (a rollback
        or a pause won meanwhile); one round trip. True where written."""
        if not changes:
            return []
        documents = [rollout.model_dump_json().encode() for _, rollout in changes]
        with self.client.pipeline(transaction=False) as pipe:
            for (raw, rollout), document in zip(changes, documents, strict=True):
                self._cas(keys=[self.keys.rollout(rollout.service), self.keys.watched],
                          args=[raw, document, "1" if rollout.phase.watched else "0",
                                _score(rollout), rollout.service], client=pipe)
            written = [bool(done) for done in pipe.execute()]
        for (_, rollout), document, done in zip(changes, documents, written, strict=True):
            if done:  # what the next read will return: no need to parse it again
                self._parsed[rollout.service] = (document, rollout)
        return written

    def get(self, service: str) -> Rollout | None:
        raw = self.client.get(self.keys.rollout(service))
        return Rollout.model_validate_json(raw) if raw else None

    def put(self, rollout: Rollout) -> None:
        with self.client.pipeline() as pipe:
            self._write(pipe, rollout)
            pipe.execute()

    def _write(self, pipe: redis.client.Pipeline, rollout: Rollout) -> None:
        pipe.set(self.keys.rollout(rollout.service), rollout.model_dump_json())
        if rollout.phase.watched:
            pipe.zadd(self.keys.watched, {rollout.service: _score(rollout)})
        else:
            pipe.zrem(self.keys.watched, rollout.service)

    def update(
        self, service: str, change: Callable[[Rollout | None], Rollout | None],
        *, watch: Sequence[str] = (),
    ) -> Rollout | None:
        """Apply ``change`` to the current state atomically; ``None`` from it writes nothing.

        ``watch``: other keys ``change`` reads (e.g. the rollback sequence); a change of any of
        them before the write runs ``change`` again, so what it checked still holds when the
        state is written. An exception from ``change`` writes nothing."""
        key = self.keys.rollout(service)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key, *watch)  # type: ignore[no-untyped-call]
                    raw = pipe.get(key)
                    current = Rollout.model_validate_json(raw) if raw else None
                    updated = change(current)
                    if updated is None:
                        pipe.unwatch()
                        return current
                    pipe.multi()
                    self._write(pipe, updated)
                    pipe.execute()
                    return updated
                except redis.WatchError:
                    continue

    def due(self, now: float, limit: int = 10_000) -> list[str]:
        """Services whose next analysis check has come."""
        members = self.client.zrangebyscore(self.keys.watched, "-inf", now, start=0, num=limit)
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    def watched(self, limit: int = 10_000) -> list[str]:
        """Every service under watch, due or not (the tick looks at each one's comparison)."""
        members = self.client.zrange(self.keys.watched, 0, limit - 1)
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    def watched_count(self) -> int:
        return int(self.client.zcard(self.keys.watched))

    def mark_unapplied(self, service: str, now: float, owner: str = TICK_OWNER) -> None:
        """The rollout's state is about to say a weight the VirtualService does not show yet:
        if the writer (``owner``: an RQ job id, or the tick) ends before ``mark_applied``, the
        ticker settles it (``jobs.runtime.reconcile``). A later writer takes the mark over."""
        with self.client.pipeline() as pipe:
            pipe.zadd(self.keys.unapplied, {service: now})
            pipe.hset(self.keys.unapplied + ":owner", service, owner)
            pipe.execute()

    def mark_applied(self, service: str, owner: str | None = None) -> None:
        """Clear the mark; with ``owner``, only if it is still that writer's (a rollback that
        marked the service since keeps its mark)."""
        if owner is None:
            with self.client.pipeline() as pipe:
                pipe.zrem(self.keys.unapplied, service)
                pipe.hdel(self.keys.unapplied + ":owner", service)
                pipe.execute()
            return
        self._clear_if_owner(keys=[self.keys.unapplied, self.keys.unapplied + ":owner"],
                             args=[service, owner])

    def defer_unapplied(self, service: str, owner: str, since: float) -> bool:
        """Date the mark ``since`` (never earlier than it is) while it is still ``owner``'s:
        a reconcile waiting a grace period from the mark's time then waits from ``since``."""
        return bool(self._defer_if_owner(
            keys=[self.keys.unapplied, self.keys.unapplied + ":owner"],
            args=[service, owner, repr(since)]))

    def first_seen(self, key: str, text: str) -> str:
        """What a request's first attempt read, under ``key`` (kept a day); ``text`` if this is
        it. A retry after a write that landed reads its own write: what it reports as "before"
        must be what the first attempt found."""
        name = f"{self.keys.prefix}before:{key}"
        self.client.set(name, text, nx=True, ex=86400)
        raw = self.client.get(name)
        return raw.decode() if isinstance(raw, bytes) else str(raw if raw is not None else text)

    def was_seen(self, key: str) -> bool:
        """Whether an attempt of the request kept something under ``key`` (``first_seen``)."""
        return bool(self.client.exists(f"{self.keys.prefix}before:{key}"))

    def first_before(self, key: str, weights: Weights) -> Weights:
        """The split a request's first attempt read (kept a day); ``weights`` if this is it."""
        text = self.first_seen(key, f"{weights.stable} {weights.canary}")
        stable, _, canary = text.partition(" ")
        try:
            return Weights(stable=int(stable), canary=int(canary))
        except ValueError:
            return weights

    def unapplied_owner(self, service: str) -> str:
        raw = self.client.hget(self.keys.unapplied + ":owner", service)
        return raw.decode() if isinstance(raw, bytes) else (raw or TICK_OWNER)

    def unapplied_since(self, before: float) -> list[str]:
        members = self.client.zrangebyscore(self.keys.unapplied, "-inf", before)
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    def live_subset(self, service: str, default: str) -> str:
        raw = self.client.get(self.keys.live_subset(service))
        return raw.decode() if isinstance(raw, bytes) else default

    def set_live_subset(self, service: str, subset: str) -> None:
        self.client.set(self.keys.live_subset(service), subset)
