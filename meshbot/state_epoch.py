"""Noticing that Redis lost meshbot's state (restarted without persistence, or flushed).

Every rollout, approval, lock and audit entry lives in Redis. A Redis without AOF that restarts
comes back empty, and nothing else would say so: a canary at 30 % errors would simply no longer
be watched. An *epoch* key, written once, is remembered by every worker's ticker from its start,
whether or not it holds the ticker's lease (the lease key vanishes with the rest, and the worker
that takes it next may be another one). When it vanishes (or is replaced), every process that
saw it notices: each records the loss under a second key — the first record stays, and
``/readyz`` of every process reports it — and keeps the loss as *unsaid* until the notice for
the channel has been handed over (``said``), so a Redis or Slack failure at that moment loses
nothing; the notice itself is owed once per vanished epoch, whichever process owes it first.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import redis

EPOCH_KEY = "meshbot:state-epoch"
LOST_KEY = "meshbot:state-lost"
LOST_TTL_S = 7 * 24 * 3600  # long enough for a person to see it in /readyz

log = logging.getLogger("meshbot.state")


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


@dataclass(frozen=True)
class Loss:
    at: float  # when this process noticed it
    epoch: str  # the epoch that vanished


class StateEpoch:
    """The epoch this process saw first; ``check`` says when it changed under us."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.seen: str | None = None
        self.noticed: Loss | None = None  # the last loss this process noticed
        self.unsaid: Loss | None = None  # ... until its notice is owed to the channel

    def _current_or_new(self) -> str:
        self.client.set(EPOCH_KEY, f"{time.time():.3f}", nx=True)
        current = _text(self.client.get(EPOCH_KEY))
        assert current is not None  # just set, unless Redis vanished again at this instant
        return current

    def check(self, now: float | None = None) -> Loss | None:
        """The loss this process noticed and whose notice is not handed over yet, if any —
        in every process that saw the epoch before it vanished."""
        current = _text(self.client.get(EPOCH_KEY))
        if self.seen is None:
            self.seen = current if current is not None else self._current_or_new()
            return self.unsaid
        if current != self.seen:
            loss = Loss(at=time.time() if now is None else now, epoch=self.seen)
            self.seen = current if current is not None else self._current_or_new()
            self.noticed = self.unsaid = loss
            log.error("Redis lost meshbot's state (it came back empty): rollouts, approvals "
                      "and audit entries from before are gone")
        if self.unsaid is not None:  # the first process to record it is the one /readyz shows
            record = json.dumps({"at": self.unsaid.at, "epoch": self.unsaid.epoch})
            self.client.set(LOST_KEY, record, nx=True, ex=LOST_TTL_S)
        return self.unsaid

    def said(self) -> None:
        """The notice of the unsaid loss is handed over (owed to the channel, or nowhere to
        say it)."""
        self.unsaid = None


def lost_since(client: redis.Redis) -> float | None:
    """When Redis lost meshbot's state (as a ticker noticed), if it did lately."""
    raw = _text(client.get(LOST_KEY))
    if raw is None:
        return None
    try:
        return float(json.loads(raw)["at"])
    except (ValueError, KeyError, TypeError):
        return None
