"""The one door from the bot into the work side: submit a request, record a refusal, read state.

Imports nothing that touches the cluster or Prometheus: the bot decides and enqueues, workers act.
A request is enqueued at most once per id (a Slack retry of the same request is recognised), and
it is in Redis before the bot acks, so an acked command is never lost.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.client import Pipeline
from redis.commands.core import Script
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from jobs.adapters.alert_threads import ROLLBACK_EMOJI, AlertThreads
from jobs.adapters.audit import AuditEntry, AuditLog
from jobs.adapters.keys import Keys
from jobs.adapters.state_gauges import read_state as _read_state

# Re-exported: the bot reaches jobs only through this module.
from jobs.domain.approval_rules import Reaction as Reaction
from jobs.domain.approval_rules import Verdict as Verdict
from jobs.runtime.approvals import GroupsOf
from jobs.runtime.approvals import react as _react
from jobs.runtime.enqueue_template import EnqueueTemplate
from jobs.runtime.retry import SCHEDULE
from meshbot import cluster_scope
from meshbot.commands import Command, Request, Verb
from meshbot.errors import QueueUnavailable
from meshbot.metrics import StateSample
from meshbot.verbs import verbs_where
from policies.decide import Allow, Decision, Deny, decide
from policies.policy import Policy

TASK = "jobs.runtime.tasks.handle_request"
DEDUPE_TTL_S = 24 * 3600
ALERT_DEDUPE_TTL_S = 3600  # Alertmanager retries a notification for minutes, not hours
# Rollbacks go to their own queue, which workers drain first: a rollback never waits behind work.
URGENT_SUFFIX = "-urgent"
URGENT_VERBS = verbs_where(urgent=True)
WINNING_VERBS = verbs_where(wins=True)
CHANGING_VERBS = verbs_where(changes_mesh=True) - WINNING_VERBS
SEQUENCE_KEY = "meshbot:sequence"
# service → the sequence of the latest rollback accepted for it (see ``overtaken``).
ROLLBACK_SEQUENCE_KEY = "meshbot:rollback-sequence"
RETRY = Retry(max=len(SCHEDULE), interval=list(SCHEDULE))
REQUEST_TIMEOUT_S = 120

# RQ's writes, carried into a script as one argument (``_packed``): per command its length,
# then each part, every number followed by ':'. One argument instead of some fifty, because
# redis-py's per-argument packing was the largest single cost of an ack.
_REPLAY = """
local function replay(blob)
    local pos = 1
    local function number()
        local colon = string.find(blob, ':', pos, true)
        local n = tonumber(string.sub(blob, pos, colon - 1))
        pos = colon + 1
        return n
    end
    while pos <= #blob do
        local command = {}
        for j = 1, number() do
            local size = number()
            command[j] = string.sub(blob, pos, pos + size - 1)
            pos = pos + size
        end
        redis.call(unpack(command))
    end
end
"""
# The whole submit in one round trip, atomically: the dedupe check and mark, the request's
# sequence (kept under its own key, where the job reads it: see ``sequence_of``), the
# rollback's sequence for its service, and RQ's own enqueue writes, passed in as commands.
# A script runs only once Redis has it whole, so a connection cut anywhere leaves nothing.
# (RQ's keys are not declared in KEYS: fine on one Redis, which is what meshbot runs on.)
_SUBMIT = _REPLAY + """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return {0, redis.call('GET', KEYS[2]) or ''}
end
local sequence = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
redis.call('SET', KEYS[2], sequence .. ' ' .. ARGV[1], 'EX', ARGV[2])
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[4], 'GT', sequence, ARGV[3]) end
replay(ARGV[4])
return {1, sequence}
"""


# An alert notification's first delivery: the same shape without the sequences.
_SUBMIT_ONCE = _REPLAY + """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) == false then return 0 end
replay(ARGV[2])
return 1
"""


def _rq_writes(client: redis.Redis, enqueue: Callable[[Pipeline], object]) -> bytes:
    """What RQ would write for ``enqueue``, packed for ``_REPLAY``. RQ writes into a pipeline
    that is never executed."""
    recorder = client.pipeline(transaction=False)
    try:
        enqueue(recorder)
        return _packed([command for command, _options in recorder.command_stack],
                       client.get_encoder().encode)
    finally:
        recorder.reset()


def _enqueue(client: redis.Redis, queue: str, func: str, args: tuple[Any, ...], job: str,
             timeout: int, pipe: Pipeline) -> object:
    """RQ's enqueue of ``func(*args)`` as ``job`` into ``pipe``: meshbot's retries, an hour's
    results, a week's failures."""
    return _queue(client, queue).enqueue_call(
        func, args=args, job_id=job, retry=RETRY, timeout=timeout, result_ttl=3600,
        failure_ttl=7 * 24 * 3600, pipeline=pipe)


def _job_writes(client: redis.Redis, queue: str, func: str, args: tuple[Any, ...],
                job: str, *, timeout: int) -> bytes:
    """RQ's writes for enqueueing ``func(*args)`` as ``job``, packed for a script."""
    return _rq_writes(client, lambda pipe: _enqueue(client, queue, func, args, job, timeout,
                                                    pipe))


def _request_template(client: redis.Redis, queue: str) -> EnqueueTemplate:
    """RQ's enqueue of a request's job on ``queue``, recorded once per connection pool and
    queue (the ack's hot path: see ``jobs.runtime.enqueue_template``): ``serve``'s threads each
    hold a client of one pool, and recording asks Redis for its version."""
    templates: dict[str, EnqueueTemplate] = _TEMPLATES.setdefault(client.connection_pool, {})
    if queue not in templates:
        templates[queue] = EnqueueTemplate(
            client, TASK, lambda pipe, job, argument: _enqueue(
                client, queue, TASK, (argument,), job, REQUEST_TIMEOUT_S, pipe))
    return templates[queue]


_TEMPLATES: weakref.WeakKeyDictionary[redis.ConnectionPool, dict[str, EnqueueTemplate]] = \
    weakref.WeakKeyDictionary()


@contextmanager
def _taken_by_redis(what: str) -> Iterator[None]:
    """Redis failing while it takes ``what`` → QueueUnavailable, naming it."""
    try:
        yield
    except redis.RedisError as exc:
        raise QueueUnavailable(f"Redis did not take {what} ({type(exc).__name__})") from exc


def _packed(commands: list[tuple[Any, ...]], encode: Callable[[Any], bytes]) -> bytes:
    parts: list[bytes] = []
    for command in commands:
        parts.append(b"%d:" % len(command))
        for part in command:
            # What redis-py would send for the common types, without its per-call checks.
            raw = (part if isinstance(part, bytes) else part.encode() if isinstance(part, str)
                   else encode(part))
            parts += (b"%d:" % len(raw), raw)
    return b"".join(parts)


def _queue(client: redis.Redis, name: str) -> Queue:
    """The RQ queue ``name`` on ``client``, built once: building one resolves its serializer
    through a runtime protocol check, which showed on every ack."""
    queues: dict[str, Queue] = _QUEUES.setdefault(client, {})
    if name not in queues:
        queues[name] = Queue(name, connection=client, serializer=JSONSerializer)
    return queues[name]


_QUEUES: weakref.WeakKeyDictionary[redis.Redis, dict[str, Queue]] = weakref.WeakKeyDictionary()


def _script(client: redis.Redis, text: str) -> Script:
    """``client``'s registered script ``text``, built once (building one hashes the text)."""
    scripts: dict[str, Script] = _SCRIPTS.setdefault(client, {})
    if text not in scripts:
        scripts[text] = client.register_script(text)
    return scripts[text]


_SCRIPTS: weakref.WeakKeyDictionary[redis.Redis, dict[str, Script]] = weakref.WeakKeyDictionary()


def queue_names(base: str) -> list[str]:
    """Queues a worker listens on, most urgent first."""
    return [base + URGENT_SUFFIX, base]


def read_state(client: redis.Redis, queue: str = "meshbot") -> StateSample | None:
    """Queue depth and rollouts by phase for /metrics; None while Redis does not answer."""
    return _read_state(client, queue_names(queue))


def job_id(request_id: str) -> str:
    """RQ accepts only letters, digits, '_' and '-'; Slack's trigger ids contain dots."""
    return "req-" + hashlib.sha256(request_id.encode()).hexdigest()[:32]


def submit(
    client: redis.Redis, request: Request, *, queue: str = "meshbot", keys: Keys | None = None,
    then: Callable[[Pipeline], object] | None = None,
) -> bool:
    """Enqueue ``request`` unless one with the same id was already accepted. True if enqueued.

    The dedupe mark and RQ's writes land together or not at all, in one round trip
    (``_SUBMIT``): a failure half-way can never leave a request marked as received but not
    queued (Slack's retry would then be answered "duplicate" and the command lost). ``then``
    adds writes (into a pipeline that is recorded, never executed) that land with the request,
    in the same script call, or not at all. Redis failing → QueueUnavailable.
    """
    keys = keys or Keys()
    name = queue + URGENT_SUFFIX if request.command.verb in URGENT_VERBS else queue
    service = rollback_member(request.command)
    wins = request.command.verb in WINNING_VERBS and bool(service)
    # Tells our own earlier attempt (redis-py retrying after a lost reply) from another
    # delivery of the same request.
    ours = _attempt()
    with _taken_by_redis("the request"):
        writes = _request_template(client, name).writes(
            job_id(request.id), request.model_dump(mode="json"), f"request {request.id}")
        if then is not None:
            writes += _rq_writes(client, then)
        taken, value = _script(client, _SUBMIT)(
            keys=[keys.request(request.id), _sequence_key(request), SEQUENCE_KEY,
                  ROLLBACK_SEQUENCE_KEY],
            args=[ours, DEDUPE_TTL_S, (service or "") if wins else "", writes])
    if taken:
        return True
    sequenced = value.decode() if isinstance(value, bytes) else str(value)
    return sequenced.partition(" ")[2] == ours


def _attempt() -> str:
    """A token no other submit uses: a random part drawn by each process (again after a fork)
    and a count. ``uuid4`` per submit cost more than the rest of the submit's own work."""
    return f"{_nonce[0]}.{next(_ATTEMPTS)}"


_nonce = [os.urandom(12).hex()]
_ATTEMPTS = itertools.count()
os.register_at_fork(after_in_child=lambda: _nonce.__setitem__(0, os.urandom(12).hex()))


def _sequence_key(request: Request) -> str:
    return f"{SEQUENCE_KEY}:{job_id(request.id)}"


def sequence_of(client: redis.Redis, request: Request) -> int:
    """The order in which ``request`` was accepted (gaps are harmless: only order counts);
    0 if unknown (accepted more than a day ago).

    The job's data is written by RQ before Redis hands out the number, so the submit keeps it
    beside the job, where the job reads it; a request acked before that carries it itself."""
    if request.sequence:
        return request.sequence
    found = client.get(_sequence_key(request))
    head = (found.decode() if isinstance(found, bytes) else str(found or "")).partition(" ")[0]
    return int(head) if head.isdigit() else 0


def rollback_member(command: Command) -> str | None:
    """The service a rollback wins for: the same name in another cluster is another service."""
    if not command.target:
        return None
    return f"{command.cluster}/{command.target}" if command.cluster else command.target


def overtaken(client: redis.Redis, request: Request) -> bool:
    """Whether a rollback of the request's service was accepted after this change was: then
    the change must not take effect (a rollback acked later wins over it)."""
    service = rollback_member(request.command)
    if not service or request.command.verb not in CHANGING_VERBS:
        return False
    latest = client.zscore(ROLLBACK_SEQUENCE_KEY, service)
    if latest is None:
        return False
    sequence = sequence_of(client, request)
    return bool(sequence) and latest > sequence


def record_refusal(
    client: redis.Redis, request: Request, reason: str, keys: Keys | None = None
) -> None:
    """Audit a refusal; Redis failing → QueueUnavailable (the caller is told anyway)."""
    with _taken_by_redis("the audit entry"):
        _record_refusal(client, request, reason, keys)


def _record_refusal(
    client: redis.Redis, request: Request, reason: str, keys: Keys | None = None
) -> None:
    AuditLog(client, keys).record(_refusal_entry(request, reason))


def _refusal_entry(request: Request, reason: str) -> AuditEntry:
    return AuditEntry(
        actor=request.user,
        action=request.command.verb.value,
        target=request.command.target,
        outcome="refused",
        request_id=request.id,
        detail=reason,
    )


def react(client: redis.Redis, reaction: Reaction, *, policy: Policy, groups_of: GroupsOf,
          queue: str = "meshbot", now: float | None = None) -> Verdict:
    """Count a reaction on an approval request (``jobs.approvals``); a reaction on any other
    message is ignored. Idempotent per ``reaction.event_id``; enqueues the work at quorum."""
    with _taken_by_redis("the reaction"):
        return _react(client, reaction, policy=policy, groups_of=groups_of, queue=queue,
                      now=time.time() if now is None else now)


# --- alert threads (Alertmanager webhook → a job that posts; rollback reactions on them) ---

ALERT_TASK = "jobs.runtime.handlers.alerts.alert_job"
NOTE_TASK = "jobs.runtime.handlers.alerts.note_job"


def submit_alert(client: redis.Redis, payload: dict[str, Any], digest: str, *,
                 queue: str = "meshbot") -> bool:
    """Enqueue one Alertmanager notification (already validated) unless the same content was
    accepted already; True if enqueued.

    The first-delivery mark and the enqueue land together (one script, as ``submit``): a
    failure between them would answer Alertmanager's retry "duplicate" and lose the alert.
    Redis failing → QueueUnavailable."""
    with _taken_by_redis("the alert"):
        writes = _job_writes(client, queue, ALERT_TASK, (payload,), "alert-" + digest[:32],
                             timeout=60)
        taken = _script(client, _SUBMIT_ONCE)(
            keys=[AlertThreads(client).notification_key(digest)],
            args=[ALERT_DEDUPE_TTL_S, writes])
    return bool(taken)


def alert_reaction(client: redis.Redis, reaction: Reaction, *, policy: Policy,
                   groups_of: GroupsOf, queue: str = "meshbot") -> str:
    """A rollback emoji on an alert message asks for ``/mesh rollback <service>``, judged by
    the policy exactly as the typed command would be (permission, channel).

    What it writes lands in one script call per reaction, deduplicated by the reaction's
    event: the rollback with its note in the alert thread, or the refusal's audit entry with
    the note telling the person why. Slack's retry of the same event (after Redis failed, or
    after an answer that never came back) then neither loses the note nor audits twice.
    Redis failing → QueueUnavailable, naming what Redis did not take."""
    if not reaction.added or reaction.emoji not in ROLLBACK_EMOJI:
        return "ignored"
    with _taken_by_redis("the alert reaction (reading which alert it is on)"):
        target = AlertThreads(client).target_at(reaction.channel, reaction.ts)
    if target is None:
        return "not_an_alert"
    service, cluster = target
    with cluster_scope.scope(cluster):  # the rollback, its refusal and its audit: its cluster's
        return _alert_rollback(client, reaction, policy, groups_of, queue, service, cluster)


def _alert_rollback(client: redis.Redis, reaction: Reaction, policy: Policy,
                    groups_of: GroupsOf, queue: str, service: str, cluster: str | None) -> str:
    groups = frozenset(m for ms in policy.roles.values() for m in ms if m.startswith("S"))
    user_groups = groups_of(reaction.user, groups) if groups else frozenset()
    request = Request(
        id=f"alert-rollback:{reaction.event_id or reaction.channel + reaction.ts + reaction.user}",
        command=Command(verb=Verb.ROLLBACK, target=service, cluster=cluster),
        user=reaction.user,
        channel=reaction.channel, received_at=time.time(),
    )
    decision: Decision = decide(policy, verb=Verb.ROLLBACK.value, target=service,
                                user=reaction.user, user_groups=user_groups,
                                channel=reaction.channel)
    if isinstance(decision, Allow):
        _, ambiguous = policy.cluster_for(Verb.ROLLBACK, service, cluster)
        decision = Deny(ambiguous) if ambiguous else decision
    if not isinstance(decision, Allow):  # a rollback never needs approval: anything else is no
        reason = decision.reason if isinstance(decision, Deny) else "it would need approval"
        return _alert_refusal(client, reaction, request, queue, service, reason)
    # The rollback and its note in one script call (Redis failing: QueueUnavailable).
    accepted = submit(client, request, queue=queue,
                      then=_note(client, reaction, request, queue, service, None))
    return "rollback" if accepted else "duplicate"


def _note(client: redis.Redis, reaction: Reaction, request: Request, queue: str, service: str,
          refusal: str | None) -> Callable[[Pipeline], object]:
    """RQ's writes for the note in the alert thread (or to the person refused), one per
    request: its id is derived from the request's."""
    return lambda pipe: _queue(client, queue).enqueue_call(
        NOTE_TASK, args=(reaction.channel, reaction.ts, reaction.user, service, refusal),
        job_id="note-" + job_id(request.id).removeprefix("req-"), retry=RETRY,
        result_ttl=600, pipeline=pipe)


def _alert_refusal(client: redis.Redis, reaction: Reaction, request: Request, queue: str,
                   service: str, reason: str) -> str:
    """The refusal's audit entry and its note, once per request (``_SUBMIT_ONCE``, on the
    request's own dedupe key): a retry of the same event writes neither again."""
    entry = _refusal_entry(request, reason)
    with _taken_by_redis("the refusal of the rollback asked for on the alert"):
        # Each recorded on its own: RQ starts its own transaction in the pipeline it is given.
        writes = (_rq_writes(client, lambda pipe: AuditLog(client).write(pipe, entry))
                  + _rq_writes(client, _note(client, reaction, request, queue, service, reason)))
        taken = _script(client, _SUBMIT_ONCE)(
            keys=[Keys().request(request.id)], args=[DEDUPE_TTL_S, writes])
    if not taken:
        return "duplicate"
    AuditLog.logged(entry)
    return "refused"
