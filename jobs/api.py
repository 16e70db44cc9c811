"""The one door from the bot into the work side: submit a request, record a refusal, read state.

Imports nothing that touches the cluster or Prometheus: the bot decides and enqueues, workers act.
A request is enqueued at most once per id (a Slack retry of the same request is recognised), and
it is in Redis before the bot acks, so an acked command is never lost.
"""

from __future__ import annotations

import hashlib
import time

import redis
from rq import Queue, Retry
from rq.serializers import JSONSerializer

# Re-exported: the bot reaches jobs only through this module.
from jobs.approval_rules import Reaction as Reaction
from jobs.approval_rules import Verdict as Verdict
from jobs.approvals import GroupsOf
from jobs.approvals import react as _react
from jobs.audit import AuditEntry, AuditLog
from jobs.gauges import read_state as _read_state
from jobs.keys import Keys
from meshbot.commands import Request, Verb
from meshbot.metrics import StateSample
from policies.policy import Policy

TASK = "jobs.tasks.handle_request"
DEDUPE_TTL_S = 24 * 3600
# Rollbacks go to their own queue, which workers drain first: a rollback never waits behind work.
URGENT_SUFFIX = "-urgent"
URGENT_VERBS = frozenset({Verb.ROLLBACK, Verb.ABORT, Verb.EMERGENCY})
RETRY = Retry(max=5, interval=[1, 2, 4, 8, 16])


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
    client: redis.Redis, request: Request, *, queue: str = "meshbot", keys: Keys | None = None
) -> bool:
    """Enqueue ``request`` unless one with the same id was already accepted. True if enqueued."""
    keys = keys or Keys()
    if not client.set(keys.request(request.id), "1", nx=True, ex=DEDUPE_TTL_S):
        return False
    name = queue + URGENT_SUFFIX if request.command.verb in URGENT_VERBS else queue
    Queue(name, connection=client, serializer=JSONSerializer).enqueue(
        TASK,
        request.model_dump(mode="json"),
        job_id=job_id(request.id),
        retry=RETRY,
        job_timeout=120,
        result_ttl=3600,
        failure_ttl=7 * 24 * 3600,
    )
    return True


def record_refusal(
    client: redis.Redis, request: Request, reason: str, keys: Keys | None = None
) -> None:
    AuditLog(client, keys).record(
        AuditEntry(
            actor=request.user,
            action=request.command.verb.value,
            target=request.command.target,
            outcome="refused",
            request_id=request.id,
            detail=reason,
        )
    )


def react(client: redis.Redis, reaction: Reaction, *, policy: Policy, groups_of: GroupsOf,
          queue: str = "meshbot", now: float | None = None) -> Verdict:
    """Count a reaction on an approval request (``jobs.approvals``); a reaction on any other
    message is ignored. Idempotent per ``reaction.event_id``; enqueues the work at quorum."""
    return _react(client, reaction, policy=policy, groups_of=groups_of, queue=queue,
                  now=time.time() if now is None else now)
