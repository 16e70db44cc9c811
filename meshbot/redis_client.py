"""meshbot's one Redis adapter: every production client is built by ``connect``, and a
``redis.RedisError`` becomes a meshbot error in one place, ``translate``.

Each role says how long it may wait on Redis and how often redis-py may try again; nothing is
left to redis-py's defaults (5 s timeouts and ten retries with jittered backoff, which would keep
a Slack ack waiting far past Slack's 3 s while Redis hangs).

    role      who                                   socket / connect   retries
    serve     the ack (``meshbot serve``, socket)   1 s / 1 s          1
    health    /healthz, /readyz and /metrics        2 s / 2 s          none
    worker    RQ's own connection                   11 s (below) / 5 s 3
    jobs      the jobs' client (their stores)       5 s / 2 s          2
    ticker    the ticker, the lease, the wait       5 s / 2 s          1

RQ raises the socket timeout of the connection its worker is given to its dequeue timeout and
10 s (a blocking pop must not time out): ``worker_ttl - 5``, 415 s with RQ's default TTL, 11 s
with meshbot's (``jobs.runtime.worker.WORKER_TTL_S``, 16 s), which this role already has. That
connection is RQ's alone, and everything that must notice a hung Redis in 5 s has a client of its
own.

Only a dropped or refused connection (a restart, an idle connection closed) is retried, at once
and then with a short jittered backoff (50 ms doubling, at most 0.5 s). A timeout never is: the
call has waited its whole timeout already, and a hung Redis would not answer the retry either;
the caller fails now (the ack says so, a job is retried by RQ, the ticker tries at its next tick).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.retry import Retry

from meshbot.errors import MeshbotError, PermanentError, QueueUnavailable, TemporaryError

Role = Literal["serve", "health", "worker", "jobs", "ticker"]


@dataclass(frozen=True)
class Policy:
    socket_timeout: float
    connect_timeout: float
    retries: int  # on a ConnectionError only
    health_check_interval: int = 30  # seconds idle before a pooled connection is PINGed first

    def retry(self) -> Retry:
        if self.retries <= 0:
            return Retry(NoBackoff(), 0)
        return Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), self.retries,
                     supported_errors=(redis.ConnectionError,))


POLICIES: dict[Role, Policy] = {
    "serve": Policy(socket_timeout=1.0, connect_timeout=1.0, retries=1),
    "health": Policy(socket_timeout=2.0, connect_timeout=2.0, retries=0),
    # RQ's dequeue timeout + 10 s (``Worker._set_connection`` would raise it to that): the
    # worker's 1 s blocking pop (``WORKER_TTL_S`` 16) and a margin.
    "worker": Policy(socket_timeout=11.0, connect_timeout=5.0, retries=3),
    "jobs": Policy(socket_timeout=5.0, connect_timeout=2.0, retries=2),
    "ticker": Policy(socket_timeout=5.0, connect_timeout=2.0, retries=1),
}


def connect(url: str, role: Role) -> redis.Redis:
    """A client for ``url`` with ``role``'s timeouts and retry policy."""
    policy = POLICIES[role]
    return redis.Redis.from_url(
        url,
        socket_timeout=policy.socket_timeout,
        socket_connect_timeout=policy.connect_timeout,
        health_check_interval=policy.health_check_interval,
        retry=policy.retry(),
        retry_on_timeout=False,  # the Retry above says which errors are retried: not timeouts
    )


# Error replies that say Redis cannot serve now but will (loading its data, a script running
# too long, a replica, out of memory, a cluster fail-over).
_BUSY_REPLIES = ("LOADING", "BUSY", "READONLY", "OOM", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN",
                 "NOREPLICAS")
# How long to wait before trying again, by reply; a dropped connection or timeout: 1 s.
_DELAYS = {"LOADING": 2.0, "BUSY": 2.0, "OOM": 5.0}


def translate(exc: redis.RedisError, doing: str = "Redis failed") -> MeshbotError:
    """``exc`` as a meshbot error (raise it ``from exc``): ``QueueUnavailable`` when trying
    again later may succeed (Redis down, hung, loading, busy, read-only, out of memory), a
    ``TemporaryError`` for a lost optimistic race, a ``PermanentError`` for what no retry
    mends (a wrong password or ACL, a command Redis rejects: WRONGTYPE, NOSCRIPT — a bug)."""
    name = type(exc).__name__
    text = str(exc).strip()
    head = text.split(" ", 1)[0].upper()
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthorizationError
                  | redis.exceptions.NoPermissionError):
        return PermanentError(f"{doing}: Redis refused meshbot's credentials ({name}: {text})")
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):  # BusyLoadingError too
        if isinstance(exc, redis.BusyLoadingError):
            return QueueUnavailable(f"{doing}: Redis is loading its data ({name})",
                                    delay=_DELAYS["LOADING"])
        return QueueUnavailable(f"{doing}: Redis did not answer ({name})")
    if isinstance(exc, redis.ResponseError) and (
            head in _BUSY_REPLIES
            or isinstance(exc, redis.ReadOnlyError | redis.exceptions.OutOfMemoryError)):
        reply = ("OOM" if isinstance(exc, redis.exceptions.OutOfMemoryError)
                 else "READONLY" if isinstance(exc, redis.ReadOnlyError) else head)
        return QueueUnavailable(f"{doing}: Redis cannot serve now ({reply}: {text})",
                                delay=_DELAYS.get(reply, 1.0))
    if isinstance(exc, redis.WatchError | redis.exceptions.LockError):
        return TemporaryError(f"{doing}: another writer came first ({name})", delay=0.1)
    if isinstance(exc, redis.exceptions.InvalidResponse):
        return QueueUnavailable(f"{doing}: Redis's answer was cut ({name})")
    return PermanentError(f"{doing}: Redis rejected the command ({name}: {text})")


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` is a Redis failure that waiting may mend (not a bug)."""
    return isinstance(exc, redis.RedisError) and isinstance(translate(exc), TemporaryError)
