"""Reports owed to Slack, kept in Redis until Slack takes them: in order, once.

A rollback must happen whether or not Slack answers, and its report must still be read: when a
report cannot be posted (Slack down, 5xx, a long rate limit), it is appended here and the
ticker's "delivery of owed reports" duty posts the backlog, oldest first, when Slack is back.
While a thread owes reports, newer ones to the same thread queue behind them, so the thread
reads in the order things happened. A report may also be owed to a channel (no thread yet: a
rollback whose thread root Slack did not take, the notice that Redis lost meshbot's state); it
is posted as a channel message, and the replies owed with it go into the thread it starts.

Once: each report is claimed before it is posted (one deliverer at a time, even if the ticker's
lease passes to another worker mid-delivery), and taken off the queue in the same script that
marks it delivered, right after Slack answers. Every report is posted under a key (the job's
reply key it was owed with, else ``outbox:<id>``) carried in its message metadata
(``Notifier.post_root``, ``Notifier.reply``): one Slack stored but answered 500 for, or whose
answer never came, or whose deliverer died before the script, is found in the channel's history
or the thread's replies when it is delivered again, not posted twice. What is left: Slack
refusing those look-ups (no history scope) — then it is posted again, as a report posted twice
is better than one lost.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field

import redis

from jobs.adapters.slack_notifier import Notifier
from meshbot.errors import PermanentError, TemporaryError

log = logging.getLogger("meshbot.outbox")

QUEUE_KEY = "meshbot:outbox"
OWED_KEY = "meshbot:outbox:owed"  # hash: "channel ts" → reports owed to that thread
DELIVERED_PREFIX = "meshbot:outbox:delivered:"
CLAIM_PREFIX = "meshbot:outbox:claim:"  # + id: held by the one deliverer posting it now
ONCE_PREFIX = "meshbot:outbox:once:"  # + a caller's key: that report was owed already
DELIVERED_TTL_S = 24 * 3600
CLAIM_TTL_MS = 60_000  # longer than one post can take (Slack's timeout, a short 429 wait)

# Taken off the queue only if it is still the head (nothing else delivered it meanwhile), with
# its mark, in one step; the replies owed with a channel message take its place at the head.
_DONE = """
if redis.call('lindex', KEYS[1], 0) ~= ARGV[1] then return 0 end
redis.call('lpop', KEYS[1])
if redis.call('hincrby', KEYS[2], ARGV[2], -1) <= 0 then redis.call('hdel', KEYS[2], ARGV[2]) end
redis.call('set', KEYS[3], '1', 'EX', ARGV[3])
redis.call('del', KEYS[4])
for i = #ARGV, 5, -1 do redis.call('lpush', KEYS[1], ARGV[i]) end
if #ARGV >= 5 then redis.call('hincrby', KEYS[2], ARGV[4], #ARGV - 4) end
return 1
"""
# Owed once per ``once`` key, whoever (of several processes) owes it first.
_OWE_ONCE = """
if not redis.call('set', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then return 0 end
redis.call('rpush', KEYS[2], ARGV[1])
redis.call('hincrby', KEYS[3], ARGV[2], 1)
return 1
"""


@dataclass(frozen=True)
class OwedReport:
    id: str
    channel: str
    thread_ts: str  # "" for a channel message (a new thread)
    text: str
    label: str = ""  # the cluster the report is about, as the notifier that owed it marks it
    then: list[str] = field(default_factory=list)  # replies into the thread a root starts
    key: str = ""  # the key it is posted under ("": ``outbox:<id>``)


def _thread(channel: str, thread_ts: str) -> str:
    return f"{channel} {thread_ts}"


def _encode(channel: str, thread_ts: str, text: str, label: str,
            then: list[str] | None = None, key: str | None = None) -> str:
    report: dict[str, object] = {"id": uuid.uuid4().hex, "channel": channel,
                                 "thread_ts": thread_ts, "text": text}
    if label:
        report["label"] = label
    if key:
        report["key"] = key
    if then:
        report["then"] = list(then)
    return json.dumps(report)


class Outbox:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._done = client.register_script(_DONE)
        self._owe_once = client.register_script(_OWE_ONCE)

    def owes(self, channel: str, thread_ts: str) -> bool:
        return int(self.client.hget(OWED_KEY, _thread(channel, thread_ts)) or 0) > 0

    def owe(self, channel: str, thread_ts: str, text: str, *, label: str = "",
            key: str | None = None) -> None:
        """A reply owed to the thread ``thread_ts``, after what it owes already. ``key``: the
        one it was (maybe) posted under already (``Notifier.reply_key``), so it is posted once."""
        with self.client.pipeline() as pipe:
            pipe.rpush(QUEUE_KEY, _encode(channel, thread_ts, text, label, key=key))
            pipe.hincrby(OWED_KEY, _thread(channel, thread_ts), 1)
            pipe.execute()

    def owe_root(self, channel: str, text: str, then: list[str] | None = None, *,
                 label: str = "", once: str | None = None) -> bool:
        """A channel message owed, with replies into its thread. With ``once``, only the first
        of every caller owing under that key is kept; True if this one was."""
        raw = _encode(channel, "", text, label, then)
        if once is None:
            with self.client.pipeline() as pipe:
                pipe.rpush(QUEUE_KEY, raw)
                pipe.hincrby(OWED_KEY, _thread(channel, ""), 1)
                pipe.execute()
            return True
        return bool(self._owe_once(keys=[ONCE_PREFIX + once, QUEUE_KEY, OWED_KEY],
                                   args=[raw, _thread(channel, ""), DELIVERED_TTL_S]))

    def pending(self) -> int:
        return int(self.client.llen(QUEUE_KEY))

    def deliver(self, notifier: Notifier, limit: int = 100) -> int:
        """Post owed reports oldest first until Slack refuses for now; how many went out."""
        delivered = 0
        owner = uuid.uuid4().hex
        for _ in range(limit):
            raw = self.client.lindex(QUEUE_KEY, 0)
            if raw is None:
                break
            report = OwedReport(**json.loads(raw))
            claim = CLAIM_PREFIX + report.id
            if not self.client.set(claim, owner, nx=True, px=CLAIM_TTL_MS):
                break  # another worker is posting it right now; the rest is its to post
            then: list[str] = []
            if not self.client.exists(DELIVERED_PREFIX + report.id):  # posted before a crash
                try:
                    then = self._post(notifier.labelled(report.label) if report.label
                                      else notifier, report)
                except TemporaryError as exc:
                    self.client.delete(claim)
                    log.info("owed reports wait for Slack: %s", exc.message)
                    break
                except PermanentError as exc:  # the thread or channel is gone: nowhere to go
                    log.error("owed report to %s/%s dropped: %s", report.channel,
                              report.thread_ts or "(channel)", exc.message)
                delivered += 1
            if not self._done(keys=[QUEUE_KEY, OWED_KEY, DELIVERED_PREFIX + report.id, claim],
                              args=[raw, _thread(report.channel, report.thread_ts),
                                    DELIVERED_TTL_S, then[0] if then else "", *then[1:]]):
                break  # not the head any more: someone else delivered it
        return delivered

    @staticmethod
    def _post(notifier: Notifier, report: OwedReport) -> list[str]:
        """Post ``report``; what then takes its place at the head of the queue: the thread
        field of its replies followed by each reply, encoded."""
        # Keyed: a message Slack stored but answered 500 for is found again, not posted twice.
        key = report.key or f"outbox:{report.id}"
        if report.thread_ts:
            notifier.reply(report.channel, report.thread_ts, report.text, key=key)
            return []
        ts = notifier.post_root(report.channel, report.text, key=key)
        if not report.then:
            return []
        return [_thread(report.channel, ts),
                *(_encode(report.channel, ts, text, report.label) for text in report.then)]
