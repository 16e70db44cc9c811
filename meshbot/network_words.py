"""A failed network call in words a person reads in a Slack thread.

Library exceptions (urllib3's ``HTTPConnectionPool(host=…): Max retries exceeded …``) say
what went wrong to a programmer; the thread says it to an operator — the server refused, did
not answer, dropped the connection — and the library's text goes to the log.
"""

from __future__ import annotations

import http.client
import socket
import ssl

import urllib3.exceptions


def in_words(exc: BaseException) -> str:
    """What the far side did, as the end of a sentence: "refused the connection"."""
    chain = _chain(exc)
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "refused the connection (is it running?)"
    # urllib3's NewConnectionError is a ConnectTimeoutError: refused is told first.
    if any(isinstance(e, (TimeoutError, socket.timeout, urllib3.exceptions.TimeoutError))
           for e in chain):
        return "did not answer in time"
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "could not be found (its host name does not resolve)"
    if any(isinstance(e, (ssl.SSLError, urllib3.exceptions.SSLError)) for e in chain):
        return "failed the TLS handshake"
    if any(isinstance(e, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected,
                          urllib3.exceptions.ProtocolError)) for e in chain):
        return "dropped the connection"
    return "could not be reached"


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
