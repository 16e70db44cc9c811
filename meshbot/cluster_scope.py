"""The cluster the current request (or tick duty) is about.

meshbot keeps rollouts, locks, audit and backups per cluster. Rather than thread a cluster
through every store, the code that starts work on one cluster — the bot submitting a command,
the worker running its job, the ticker's per-cluster duties — enters ``scope(name)``, and every
Redis key built inside it (``jobs.adapters.keys.Keys``) carries the cluster. ``None`` is the
only cluster of a policy that names none: its keys are the ones meshbot always used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_current: ContextVar[str | None] = ContextVar("meshbot_cluster", default=None)


def current() -> str | None:
    return _current.get()


@contextlib.contextmanager
def scope(cluster: str | None) -> Iterator[None]:
    token = _current.set(cluster)
    try:
        yield
    finally:
        _current.reset(token)
