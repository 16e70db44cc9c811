"""Noticing that Redis lost meshbot's state (restarted without persistence, or flushed).

Every rollout, approval, lock and audit entry lives in Redis. A Redis without AOF that restarts
comes back empty, and nothing else would say so: a canary at 30 % errors would simply no longer
be watched. An *epoch* key, written once, is remembered by the ticker; when it vanishes (or is
replaced) while the ticker is running, the loss is recorded under a second key — which
``/readyz`` reports — and announced once in the channel.
"""

from __future__ import annotations

import json
import time

import redis

EPOCH_KEY = "meshbot:state-epoch"
LOST_KEY = "meshbot:state-lost"
LOST_TTL_S = 7 * 24 * 3600  # long enough for a person to see it in /readyz


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


class StateEpoch:
    """The epoch this process saw first; ``check`` says when it changed under us."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.seen: str | None = None

    def _current_or_new(self) -> str:
        self.client.set(EPOCH_KEY, f"{time.time():.3f}", nx=True)
        current = _text(self.client.get(EPOCH_KEY))
        assert current is not None  # just set, unless Redis vanished again at this instant
        return current

    def check(self, now: float | None = None) -> bool:
        """True exactly once per loss, in the one process that records it."""
        current = _text(self.client.get(EPOCH_KEY))
        if self.seen is None:
            self.seen = current if current is not None else self._current_or_new()
            return False
        if current == self.seen:
            return False
        previous, self.seen = self.seen, current if current is not None else self._current_or_new()
        record = json.dumps({"at": time.time() if now is None else now, "epoch": previous})
        return bool(self.client.set(LOST_KEY, record, nx=True, ex=LOST_TTL_S))


def lost_since(client: redis.Redis) -> float | None:
    """When Redis lost meshbot's state (as the ticker noticed), if it did lately."""
    raw = _text(client.get(LOST_KEY))
    if raw is None:
        return None
    try:
        return float(json.loads(raw)["at"])
    except (ValueError, KeyError, TypeError):
        return None
