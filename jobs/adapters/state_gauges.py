"""Installation-wide numbers for ``/metrics``, read from Redis when Prometheus scrapes.

Queue depth is what RQ has waiting in meshbot's queues; rollouts are counted by phase from their
documents (``meshbot:rollout:*``) and under watch from the analysis set. A few Redis round trips
per scrape: SCAN in pages and one MGET per page, never KEYS.
"""

from __future__ import annotations

import json
from collections import Counter

import redis
from rq import Queue

from jobs.adapters.keys import Keys
from jobs.domain.rollout import Phase
from meshbot.metrics import StateSample

_PAGE = 500


def read_state(client: redis.Redis, queues: list[str],
               keys: Keys | None = None) -> StateSample | None:
    """The current numbers, or None when Redis does not answer (the scrape still succeeds)."""
    keys = keys or Keys()
    try:
        depths = {name: Queue(name, connection=client).count for name in queues}
        phases: Counter[str] = Counter({phase.value: 0 for phase in Phase})
        # Only rollout documents: "rollout:" is the exact prefix, nothing else starts with it.
        names = [n for n in client.scan_iter(match=keys.rollout("*"), count=_PAGE)]
        for start in range(0, len(names), _PAGE):
            for raw in client.mget(names[start:start + _PAGE]):
                if raw:
                    phases[_phase(raw)] += 1
        watched = int(client.zcard(keys.watched))
    except redis.RedisError:
        return None
    return StateSample(queue_depths=depths, rollouts_by_phase=dict(phases), watched=watched)


def _phase(raw: bytes | str) -> str:
    # json, not the pydantic model: a scrape should not fail on a document from another version.
    try:
        return str(json.loads(raw).get("phase", "unknown"))
    except (ValueError, AttributeError):
        return "unknown"
