"""Where meshbot's retry behaviour meets RQ's: a ``TemporaryError`` says how long to wait.

Jobs are enqueued with RQ's ``Retry(max=5, interval=[1, 2, 4, 8, 16])``; when a job fails
with a ``TemporaryError`` whose ``delay`` is longer than the next interval (Slack's
``Retry-After``, the Kubernetes API's), the next retry waits the longer of the two. The worker
applies it to every job (``jobs.runtime.worker.MeshbotWorker.handle_exception``);
``next_wait`` lets a job say beforehand how long that will be.
"""

from __future__ import annotations

import math
from typing import Any

from meshbot.errors import TemporaryError

SCHEDULE = (1, 2, 4, 8, 16)  # seconds; RQ's Retry(interval=...) for every request


def _stretched(job: Any, error: TemporaryError) -> tuple[list[int], int] | None:
    """The job's retry intervals with the next one stretched to ``error.delay``, and its index;
    None when the job has no retry left."""
    intervals = [int(i) for i in (getattr(job, "retry_intervals", None) or [])]
    retries_left = int(getattr(job, "retries_left", 0) or 0)
    if not intervals or retries_left <= 0:
        return None
    index = min(max(len(intervals) - retries_left, 0), len(intervals) - 1)
    intervals[index] = max(intervals[index], math.ceil(error.delay))
    return intervals, index


def next_wait(job: Any, error: TemporaryError) -> float:
    """How long the job's next retry will wait once the worker has seen ``error``; 0 when it
    has no retry left. Changes nothing."""
    stretched = _stretched(job, error)
    return float(stretched[0][stretched[1]]) if stretched else 0.0


def honour_delay(job: Any, error: TemporaryError) -> float:
    """Stretch the job's next retry interval to ``error.delay``; the interval it will wait."""
    stretched = _stretched(job, error)
    if stretched is None:
        return 0.0
    job.retry_intervals = stretched[0]
    return float(stretched[0][stretched[1]])
