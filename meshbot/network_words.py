"""A failed network call in words a person reads in a Slack thread.

Library exceptions (urllib3's ``HTTPConnectionPool(host=…): Max retries exceeded …``) say
what went wrong to a programmer; the thread says it to an operator — the server refused, did
not answer, dropped the connection — and the library's text goes to the log.
"""

from __future__ import annotations

import http.client
import socket
import ssl

import redis
import urllib3.exceptions


def in_words(exc: BaseException) -> str:
    """What the far side did, as the end of a sentence: "refused the connection"."""
    chain = _chain(exc)
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "refused the connection (is it running?)"
    # Before timeouts: urllib3's NameResolutionError is a NewConnectionError, which is a
    # ConnectTimeoutError (so is one for a refused connection, told first above).
    if any(isinstance(e, (socket.gaierror, urllib3.exceptions.NameResolutionError))
           for e in chain):
        return "could not be found (its host name does not resolve)"
    if any(isinstance(e, (TimeoutError, socket.timeout, urllib3.exceptions.TimeoutError))
           and not isinstance(e, urllib3.exceptions.NewConnectionError) for e in chain):
        return "did not answer in time"
    if any(isinstance(e, (ssl.SSLError, urllib3.exceptions.SSLError)) for e in chain):
        return "failed the TLS handshake"
    if any(isinstance(e, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected,
                          urllib3.exceptions.ProtocolError)) for e in chain):
        return "dropped the connection"
    return "could not be reached"


# Error replies by which Redis says it cannot serve now but will (loading its data, a script
# running too long, a replica, out of memory, a cluster fail-over), in words.
_REDIS_BUSY = {
    "LOADING": "is still loading its data (it has just restarted)",
    "BUSY": "is busy running a script",
    "READONLY": "is read-only (a replica, not the primary)",
    "OOM": "is out of memory",
    "MASTERDOWN": "has lost the link to its primary",
    "TRYAGAIN": "is moving keys between its nodes",
    "CLUSTERDOWN": "says its cluster is down",
    "NOREPLICAS": "has too few replicas to take writes",
}


def redis_busy_reply(exc: BaseException) -> str | None:
    """The error reply ("LOADING", "OOM", "READONLY", ...) by which Redis said it cannot serve
    now but will; None for any other failure."""
    if isinstance(exc, redis.BusyLoadingError):
        return "LOADING"
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return "OOM"
    if isinstance(exc, redis.ReadOnlyError):
        return "READONLY"
    if isinstance(exc, redis.ResponseError):
        head = str(exc).strip().split(" ", 1)[0].upper()
        return head if head in _REDIS_BUSY else None
    return None


def redis_in_words(exc: BaseException) -> str:
    """What Redis did, as the end of a sentence that begins "Redis …"; for a connection that
    failed, what ``in_words`` says. The one place a Redis failure is put in words
    (``meshbot.redis_client.translate`` says it with these)."""
    if isinstance(exc, (redis.AuthenticationError, redis.exceptions.AuthorizationError,
                        redis.exceptions.NoPermissionError)):
        return "refused meshbot's credentials (check the user and password in REDIS_URL)"
    busy = redis_busy_reply(exc)
    if busy is not None:
        return _REDIS_BUSY[busy]
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        if isinstance(exc, redis.TimeoutError) and not any(
                isinstance(e, ConnectionRefusedError) for e in _chain(exc)):
            return "did not answer in time"
        return in_words(exc)
    if isinstance(exc, (redis.WatchError, redis.exceptions.LockError)):
        return "saw another writer come first"
    if isinstance(exc, redis.exceptions.InvalidResponse):
        return "sent an answer meshbot could not read"
    if isinstance(exc, redis.ResponseError):
        return "rejected meshbot's command"
    return "failed"


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, what caused it, and the reason urllib3 keeps apart (``MaxRetryError.reason``)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or any(current is e for e in seen) or len(seen) > 10:
            continue
        seen.append(current)
        todo += [current.__cause__, current.__context__, getattr(current, "reason", None)
                 if isinstance(getattr(current, "reason", None), BaseException) else None]
    return seen
