"""The append-only audit log: a Redis stream (global and per target) plus one JSON log line.

Every change of the mesh, every refusal and every approval is recorded here with who, what,
before/after and the Slack permalink. Entries are only ever appended.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field
from redis.client import Pipeline

from jobs.adapters.attempt_places import AttemptPlaces
from jobs.adapters.keys import Keys

log = logging.getLogger("meshbot.audit")


class AuditEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: float = Field(default_factory=time.time)
    actor: str
    action: str
    target: str | None = None
    outcome: str  # done | refused | failed | approved | rejected | requested | ignored …
    request_id: str | None = None
    before: str | None = None
    after: str | None = None
    approvers: tuple[str, ...] = ()
    permalink: str | None = None
    detail: str = ""


# A job's outcomes that end its request having changed nothing: run again (its worker died
# after recording it), it must not end a second time, differently. "done" is not one: a
# handler may record several steps of one request, and re-running one is its own business.
ENDS_UNCHANGED = frozenset({"refused", "overtaken", "abandoned", "failed", "unsupported"})
ENDED_TTL_S = 86400


# The entry, its stream per target and its end mark, unless an earlier attempt wrote them.
_RECORD_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) == false then return 0 end
redis.call('XADD', KEYS[2], '*', 'entry', ARGV[2])
if ARGV[3] ~= '' then redis.call('XADD', KEYS[3], '*', 'entry', ARGV[2]) end
if ARGV[4] ~= '' then redis.call('SET', KEYS[4], ARGV[4], 'EX', ARGV[1]) end
return 1
"""
_PLACES = AttemptPlaces()  # one for every AuditLog: a job's entries, whichever log writes them


def _once_key(keys: Keys, entry: AuditEntry) -> str | None:
    """The key that says a job's entry was written: its job, its words (not its time or
    permalink) and how many such entries this attempt recorded before it. None outside a job
    or without a request."""
    if not entry.request_id:
        return None
    words = entry.model_dump_json(exclude={"at", "permalink"})
    shape = hashlib.sha256(words.encode()).hexdigest()[:24]
    place = _PLACES.place(shape)
    if place is None:
        return None
    job_id, count = place
    return f"{keys.prefix}audit-once:{job_id}:{shape}:{count}"


class AuditLog:
    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.client = client
        self.keys = keys or Keys()

    def record(self, entry: AuditEntry) -> None:
        """Append ``entry``. Recorded by a job, it is appended once per attempt series: a
        retry (after Slack failed, after its worker died) that records what its first attempt
        recorded already — the same words, at the same place in the attempt — adds nothing."""
        ended = self._ends(entry)
        once = _once_key(self.keys, entry)
        if once is not None:
            raw = entry.model_dump_json()
            added = self.client.register_script(_RECORD_ONCE)(
                keys=[once, self.keys.audit,
                      self.keys.audit_for(entry.target) if entry.target else self.keys.audit,
                      ended or once],
                args=[ENDED_TTL_S, raw, "1" if entry.target else "",
                      entry.outcome if ended else ""])
            if added:
                self.logged(entry)
            else:
                log.info("audit entry of %s already recorded by an earlier attempt: %s",
                         entry.request_id, entry.outcome)
            return
        # One transaction when it ends the request: never the entry without the end mark.
        with self.client.pipeline(transaction=ended is not None) as pipe:
            self.write(pipe, entry)
            pipe.execute()
        self.logged(entry)

    def write(self, pipe: Pipeline, entry: AuditEntry) -> None:
        """Add ``entry``'s writes to ``pipe`` (a transaction the caller executes, with what the
        entry records); then ``logged``, once it committed."""
        fields: dict[Any, Any] = {"entry": entry.model_dump_json()}
        pipe.xadd(self.keys.audit, fields)
        if entry.target:
            pipe.xadd(self.keys.audit_for(entry.target), fields)
        ended = self._ends(entry)
        if ended is not None:
            pipe.set(ended, entry.outcome, ex=ENDED_TTL_S)

    @staticmethod
    def logged(entry: AuditEntry) -> None:
        log.info(json.dumps({"audit": entry.model_dump(mode="json")}, sort_keys=True))

    def _ends(self, entry: AuditEntry) -> str | None:
        return self.keys.ended(entry.request_id) \
            if entry.request_id and entry.outcome in ENDS_UNCHANGED else None

    def ended(self, request_id: str) -> str | None:
        """The outcome a request ended with, changing nothing (None: it did not end so)."""
        raw = self.client.get(self.keys.ended(request_id))
        return raw.decode() if isinstance(raw, bytes) else raw

    def last(self, target: str | None, count: int) -> list[AuditEntry]:
        """The newest ``count`` entries for ``target`` (or all), newest first."""
        key = self.keys.audit_for(target) if target else self.keys.audit
        rows = self.client.xrevrange(key, count=count)
        entries = []
        for _id, fields in rows or []:
            raw = (fields or {}).get(b"entry") or (fields or {}).get("entry")
            if raw:
                entries.append(AuditEntry.model_validate_json(raw))
        return entries
