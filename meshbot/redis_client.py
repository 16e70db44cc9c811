"""meshbot's one Redis adapter: every production client is built by ``connect``, and a
``redis.RedisError`` becomes a meshbot error in one place, ``translate``, said in the words of
``meshbot.network_words.redis_in_words`` (redis-py's own text goes to the log).

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

import logging
from dataclasses import dataclass
from typing import Literal

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.retry import Retry

from meshbot.errors import MeshbotError, PermanentError, QueueUnavailable, TemporaryError
from meshbot.network_words import redis_busy_reply, redis_in_words

Role = Literal["serve", "health", "worker", "jobs", "ticker"]
log = logging.getLogger("meshbot.redis")


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


# How long to wait before trying again, by the reply Redis said it cannot serve now with
# (``redis_busy_reply``); anything else waiting may mend (a dropped connection, a timeout): 1 s.
_DELAYS = {"LOADING": 2.0, "BUSY": 2.0, "OOM": 5.0}


def translate(exc: redis.RedisError, doing: str = "Redis failed") -> MeshbotError:
    """``exc`` as a meshbot error (raise it ``from exc``): ``QueueUnavailable`` when trying
    again later may succeed (Redis down, hung, loading, busy, read-only, out of memory), a
    ``TemporaryError`` for a lost optimistic race, a ``PermanentError`` for what no retry
    mends (a wrong password or ACL, a command Redis rejects: WRONGTYPE, NOSCRIPT — a bug).

    Its message is what people read (an audit entry, a reply): ``doing`` and what Redis did in
    the words of ``redis_in_words``. redis-py's exception and text (host, port, errno, the
    reply) go to the log, here, at INFO: the caller logs the failure itself, in its words."""
    message = f"{doing}: Redis {redis_in_words(exc)}"
    log.info("%s (%s: %s)", message, type(exc).__name__, str(exc).strip() or "no detail")
    retry = _retry(exc)
    if retry is None:
        return PermanentError(message)
    kind, delay = retry
    return kind(message, delay=delay)


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` is a Redis failure that waiting may mend (not a bug). Logs nothing (RQ's
    log filter asks it)."""
    return isinstance(exc, redis.RedisError) and _retry(exc) is not None


def _retry(exc: redis.RedisError) -> tuple[type[TemporaryError], float] | None:
    """Which error ``exc`` is when trying again may succeed, and after how long; None when no
    retry mends it (a ``PermanentError``)."""
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthorizationError
                  | redis.exceptions.NoPermissionError):
        return None
    busy = redis_busy_reply(exc)  # BusyLoadingError (a ConnectionError) too
    if busy is not None:
        return QueueUnavailable, _DELAYS.get(busy, 1.0)
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError
                  | redis.exceptions.InvalidResponse):  # refused, dropped, hung, answer cut
        return QueueUnavailable, 1.0
    if isinstance(exc, redis.WatchError | redis.exceptions.LockError):
        return TemporaryError, 0.1
    return None
