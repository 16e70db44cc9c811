"""Reports owed to Slack threads, kept in Redis until Slack takes them: in order, once.

A rollback must happen whether or not Slack answers, and its report must still reach the
thread: when a report cannot be posted (Slack down, 5xx, a long rate limit), it is appended here
and the ticker delivers the backlog when Slack is back. While a thread owes reports, newer ones
to the same thread queue behind them, so the thread reads in the order things happened.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass

import redis

from jobs.adapters.slack_notifier import Notifier
from meshbot.errors import PermanentError, TemporaryError

log = logging.getLogger("meshbot.outbox")

QUEUE_KEY = "meshbot:outbox"
OWED_KEY = "meshbot:outbox:owed"  # hash: "channel ts" → reports owed to that thread
DELIVERED_PREFIX = "meshbot:outbox:delivered:"
DELIVERED_TTL_S = 24 * 3600


@dataclass(frozen=True)
class OwedReport:
    id: str
    channel: str
    thread_ts: str
    text: str


def _thread(channel: str, thread_ts: str) -> str:
    return f"{channel} {thread_ts}"


class Outbox:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def owes(self, channel: str, thread_ts: str) -> bool:
        return int(self.client.hget(OWED_KEY, _thread(channel, thread_ts)) or 0) > 0

    def owe(self, channel: str, thread_ts: str, text: str) -> None:
        report = {"id": uuid.uuid4().hex, "channel": channel, "thread_ts": thread_ts,
                  "text": text}
        with self.client.pipeline() as pipe:
            pipe.rpush(QUEUE_KEY, json.dumps(report))
            pipe.hincrby(OWED_KEY, _thread(channel, thread_ts), 1)
            pipe.execute()

    def pending(self) -> int:
        return int(self.client.llen(QUEUE_KEY))

    def deliver(self, notifier: Notifier, limit: int = 100) -> int:
        """Post owed reports oldest first until Slack refuses for now; how many went out."""
        delivered = 0
        for _ in range(limit):
            raw = self.client.lindex(QUEUE_KEY, 0)
            if raw is None:
                break
            report = OwedReport(**json.loads(raw))
            mark = DELIVERED_PREFIX + report.id
            if not self.client.exists(mark):  # posted before a crash: not twice
                try:
                    notifier.reply(report.channel, report.thread_ts, report.text)
                except TemporaryError as exc:
                    log.info("owed reports wait for Slack: %s", exc.message)
                    break
                except PermanentError as exc:  # the thread is gone: nothing to deliver to
                    log.error("owed report to %s/%s dropped: %s", report.channel,
                              report.thread_ts, exc.message)
                self.client.set(mark, "1", ex=DELIVERED_TTL_S)
                delivered += 1
            with self.client.pipeline() as pipe:
                pipe.lpop(QUEUE_KEY)
                pipe.hincrby(OWED_KEY, _thread(report.channel, report.thread_ts), -1)
                pipe.execute()
        return delivered
