"""Alert threads in Redis: one Slack thread per Alertmanager group, and which service each alert
message is about (so a rollback reaction on it knows what to roll back).

Redis and RQ only, no cluster: the bot reaches this through ``jobs.api``.
"""

from __future__ import annotations

import hashlib

import redis
from pydantic import BaseModel, ConfigDict

from jobs.adapters.keys import Keys

THREAD_TTL_S = 30 * 24 * 3600  # a group quiet for a month gets a fresh thread
ROLLBACK_EMOJI = frozenset({"rewind"})


class AlertThread(BaseModel):
    model_config = ConfigDict(frozen=True)

    group_key: str
    channel: str
    ts: str
    service: str | None
    digest: str  # what the thread last showed: a resent, unchanged notification posts nothing
    cluster: str | None = None  # the policy's cluster the alert came from, when it names several


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class AlertThreads:
    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.client = client
        # Alertmanager's groups are not a cluster's: the webhook finds them without one.
        self.prefix = (keys or Keys()).root

    def _group(self, group_key: str) -> str:
        # Alertmanager's groupKey is long and full of braces and quotes: hashed into the key.
        return f"{self.prefix}alert-thread:{_hash(group_key)}"

    def _message(self, channel: str, ts: str) -> str:
        return f"{self.prefix}alert-message:{channel}:{ts}"

    def get(self, group_key: str) -> AlertThread | None:
        raw = self.client.get(self._group(group_key))
        return AlertThread.model_validate_json(raw) if raw else None

    def save(self, thread: AlertThread) -> None:
        with self.client.pipeline() as pipe:
            pipe.set(self._group(thread.group_key), thread.model_dump_json(), ex=THREAD_TTL_S)
            if thread.service:
                target = (f"{thread.cluster}/{thread.service}" if thread.cluster
                          else thread.service)
                pipe.set(self._message(thread.channel, thread.ts), target, ex=THREAD_TTL_S)
            pipe.execute()

    def target_at(self, channel: str, ts: str) -> tuple[str, str | None] | None:
        """(the service, its cluster) an alert message (a thread root) is about; None for
        other messages."""
        raw = self.client.get(self._message(channel, ts))
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        cluster, _, service = text.rpartition("/")
        return service, cluster or None

    def notification_key(self, digest: str) -> str:
        """Marks a notification's content as accepted (Alertmanager retries a webhook that
        timed out); set by ``jobs.runtime.api.submit_alert`` with the enqueue."""
        return f"{self.prefix}alert-notification:{digest}"
