"""Reports owed to Slack, kept in Redis until Slack takes them: in order within a thread, once.

A rollback must happen whether or not Slack answers, and its report must still be read: when a
report cannot be posted (Slack down, 5xx, a long rate limit), it is appended to its thread's
line here and the ticker's "delivery of owed reports" duty posts it when Slack is back. While a
thread owes reports, newer ones to the same thread queue behind them, so the thread reads in
the order things happened. Threads take turns: one Slack refuses for now (a 5xx for its post,
an error of its channel) goes to the back of the line and the others are delivered meanwhile;
Slack rate-limiting (429: its window is the workspace's) or not answering at all holds every
thread, and so do several threads refused in a row (Slack is down: no call per thread). A
report may also be owed to a channel (no thread yet: a rollback whose thread root Slack did not
take, the notice that Redis lost meshbot's state); it is posted as a channel message (the
channel's messages are one line), and the replies owed with it start the thread it opens.

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
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis

from jobs.adapters.slack_notifier import Notifier, SlackUnreachable
from meshbot.errors import PermanentError, SlackRateLimited, TemporaryError

log = logging.getLogger("meshbot.outbox")

QUEUE_KEY = "meshbot:outbox"  # the one queue of earlier versions: moved into the threads' own
THREAD_PREFIX = "meshbot:outbox:thread:"  # + "channel ts": that thread's reports, oldest first
THREADS_KEY = "meshbot:outbox:threads"  # zset: threads owing reports, in their turn to go next
TURN_KEY = "meshbot:outbox:turn"  # counter handing out the turns (THREADS_KEY's scores)
OWED_KEY = "meshbot:outbox:owed"  # hash: "channel ts" → reports owed to that thread
DELIVERED_PREFIX = "meshbot:outbox:delivered:"
CLAIM_PREFIX = "meshbot:outbox:claim:"  # + id: held by the one deliverer posting it now
ONCE_PREFIX = "meshbot:outbox:once:"  # + a caller's key: that report was owed already
DELIVERED_TTL_S = 24 * 3600
CLAIM_TTL_MS = 60_000  # longer than one post can take (Slack's timeout, a short 429 wait)
# Threads in a row that Slack refused for now (5xx) before a delivery stops for this tick:
# one thread's failure lets the others go, a Slack that refuses everything costs few calls.
MAX_FAILED_THREADS = 3

# Appended to its thread; a thread that owed nothing takes the last turn.
_OWE = """
redis.call('rpush', KEYS[1], ARGV[1])
redis.call('hincrby', KEYS[2], ARGV[2], 1)
if not redis.call('zscore', KEYS[3], ARGV[2]) then
  redis.call('zadd', KEYS[3], redis.call('incr', KEYS[4]), ARGV[2])
end
return 1
"""
# Owed once per ``once`` key, whoever (of several processes) owes it first.
_OWE_ONCE = """
if not redis.call('set', KEYS[5], '1', 'NX', 'EX', ARGV[3]) then return 0 end
""" + _OWE
# Taken off its thread only if it is still the head (nothing else delivered it meanwhile), with
# its mark, in one step; a thread left empty gives up its turn; the replies owed with a channel
# message start the thread it opened (KEYS[7], ARGV[4]).
_DONE = """
if redis.call('lindex', KEYS[1], 0) ~= ARGV[1] then return 0 end
redis.call('lpop', KEYS[1])
if redis.call('hincrby', KEYS[2], ARGV[2], -1) <= 0 then redis.call('hdel', KEYS[2], ARGV[2]) end
redis.call('set', KEYS[3], '1', 'EX', ARGV[3])
redis.call('del', KEYS[4])
if redis.call('llen', KEYS[1]) == 0 then redis.call('zrem', KEYS[5], ARGV[2]) end
if #ARGV >= 5 then
  for i = #ARGV, 5, -1 do redis.call('lpush', KEYS[7], ARGV[i]) end
  redis.call('hincrby', KEYS[2], ARGV[4], #ARGV - 4)
  if not redis.call('zscore', KEYS[5], ARGV[4]) then
    redis.call('zadd', KEYS[5], redis.call('incr', KEYS[6]), ARGV[4])
  end
end
return 1
"""
# A thread Slack refused for now goes to the back of the line (if it still owes anything).
_LATER = """
redis.call('zadd', KEYS[1], 'XX', redis.call('incr', KEYS[2]), ARGV[1])
return 1
"""
# The one queue of earlier versions, moved to the front of each report's thread (it is older
# than anything owed since), oldest first within each. The counts in OWED_KEY already hold it.
_MOVE_QUEUE = """
local moved = 0
while true do
  local raw = redis.call('rpop', KEYS[1])
  if not raw then return moved end
  local report = cjson.decode(raw)
  local thread = report['channel'] .. ' ' .. (report['thread_ts'] or '')
  redis.call('lpush', ARGV[1] .. thread, raw)
  if not redis.call('zscore', KEYS[2], thread) then
    redis.call('zadd', KEYS[2], redis.call('incr', KEYS[3]), thread)
  end
  moved = moved + 1
end
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


def _names(members: Iterable[object]) -> list[str]:
    return [m.decode() if isinstance(m, bytes) else str(m) for m in members]


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
    """Reports owed, one line per thread: in order and once within a thread, and one thread
    Slack refuses for now (a 5xx for its post, an error of its channel) holds up only itself.
    Slack rate-limiting meshbot (429) or not answering at all holds every thread: the window
    is the workspace's (``RateWindows``), and calling into it only lengthens it."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._owe = client.register_script(_OWE)
        self._done = client.register_script(_DONE)
        self._owe_once = client.register_script(_OWE_ONCE)
        self._later = client.register_script(_LATER)
        self._move_queue = client.register_script(_MOVE_QUEUE)

    def owes(self, channel: str, thread_ts: str) -> bool:
        return int(self.client.hget(OWED_KEY, _thread(channel, thread_ts)) or 0) > 0

    def _keys(self, thread: str) -> list[str]:
        return [THREAD_PREFIX + thread, OWED_KEY, THREADS_KEY, TURN_KEY]

    def owe(self, channel: str, thread_ts: str, text: str, *, label: str = "",
            key: str | None = None) -> None:
        """A reply owed to the thread ``thread_ts``, after what it owes already. ``key``: the
        one it was (maybe) posted under already (``Notifier.reply_key``), so it is posted once."""
        thread = _thread(channel, thread_ts)
        self._owe(keys=self._keys(thread),
                  args=[_encode(channel, thread_ts, text, label, key=key), thread])

    def owe_root(self, channel: str, text: str, then: list[str] | None = None, *,
                 label: str = "", once: str | None = None, key: str | None = None) -> bool:
        """A channel message owed, with replies into its thread; ``key`` is the one it was
        (perhaps) posted under already. With ``once``, only the first of every caller owing
        under that key is kept; True if this one was."""
        raw = _encode(channel, "", text, label, then, key)
        thread = _thread(channel, "")
        if once is None:
            self._owe(keys=self._keys(thread), args=[raw, thread])
            return True
        return bool(self._owe_once(keys=[*self._keys(thread), ONCE_PREFIX + once],
                                   args=[raw, thread, DELIVERED_TTL_S]))

    def pending(self) -> int:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.llen(QUEUE_KEY)
            for thread in self._threads():
                pipe.llen(THREAD_PREFIX + thread)
            return sum(int(n) for n in pipe.execute())

    def _threads(self) -> list[str]:
        """The threads owing reports, in their turn."""
        return _names(self.client.zrange(THREADS_KEY, 0, -1))

    def _turns(self) -> list[str]:
        """The threads owing reports, in their turn, after moving what the one queue of earlier
        versions holds into them.

        Not once per process, though the queue is empty once moved: during a rolling upgrade
        this version starts while older processes still run, and those owe into the one queue
        until they stop. Moved once, at this process's start, what they owed afterwards would
        wait there unseen until a process of this version started again (and for good if none
        did). So every delivery looks at the queue's length, in the round trip that reads the
        threads' turns (no call of its own), and runs the move only when something is there:
        after an upgrade, and while an older process owes; otherwise never."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.zrange(THREADS_KEY, 0, -1)
            pipe.llen(QUEUE_KEY)
            members, left_by_older = pipe.execute()
        if not left_by_older:
            return _names(members)
        self._move_queue(keys=[QUEUE_KEY, THREADS_KEY, TURN_KEY], args=[THREAD_PREFIX])
        return self._threads()

    def deliver(self, notifier: Notifier, limit: int = 100) -> int:
        """Post owed reports, each thread's oldest first, thread after thread in their turn,
        until ``limit`` posts were tried or Slack refuses for everyone; how many went out."""
        delivered = tried = failed = 0
        owner = uuid.uuid4().hex
        turns = deque(self._turns())
        while turns:
            thread = turns.popleft()
            while tried < limit:
                raw = self.client.lindex(THREAD_PREFIX + thread, 0)
                if raw is None:
                    break
                report = OwedReport(**json.loads(raw))
                claim = CLAIM_PREFIX + report.id
                if not self.client.set(claim, owner, nx=True, px=CLAIM_TTL_MS):
                    break  # another worker is posting it right now; this thread is its own
                then: list[str] = []
                if not self.client.exists(DELIVERED_PREFIX + report.id):  # posted before a crash
                    tried += 1
                    try:
                        then = self._post(notifier.labelled(report.label) if report.label
                                          else notifier, report)
                    except (SlackRateLimited, SlackUnreachable) as exc:
                        self.client.delete(claim)  # Slack's answer for every thread: all wait
                        log.info("owed reports wait for Slack: %s", exc.message)
                        return delivered
                    except TemporaryError as exc:
                        self.client.delete(claim)
                        self._later(keys=[THREADS_KEY, TURN_KEY], args=[thread])
                        failed += 1
                        log.info("owed reports to %s/%s wait for Slack (%s); other threads "
                                 "go on", report.channel, report.thread_ts or "(channel)",
                                 exc.message)
                        if failed >= MAX_FAILED_THREADS:
                            return delivered  # refused in thread after thread: Slack is down
                        break
                    except PermanentError as exc:  # the thread or channel is gone: nowhere to go
                        log.error("owed report to %s/%s dropped: %s", report.channel,
                                  report.thread_ts or "(channel)", exc.message)
                    delivered += 1
                    failed = 0
                started = then[0] if then else thread
                if not self._done(keys=[THREAD_PREFIX + thread, OWED_KEY,
                                        DELIVERED_PREFIX + report.id, claim, THREADS_KEY,
                                        TURN_KEY, THREAD_PREFIX + started],
                                  args=[raw, thread, DELIVERED_TTL_S, started, *then[1:]]):
                    break  # not the head any more: someone else delivered it
                if then:  # the thread a root opened: its replies come next, then the rest
                    turns.extendleft([thread, started])
                    break
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
