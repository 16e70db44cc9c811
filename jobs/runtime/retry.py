"""Where meshbot's retry behaviour meets RQ's: a ``TemporaryError`` says how long to wait.

Requests are enqueued with RQ's ``Retry(max=5, interval=[1, 2, 4, 8, 16])``; when a job fails
with a ``TemporaryError`` whose ``delay`` is longer than the next interval (Slack's
``Retry-After``, the Kubernetes API's), the next retry waits the longer of the two.
"""

from __future__ import annotations

import math
from typing import Any

from meshbot.errors import TemporaryError

SCHEDULE = (1, 2, 4, 8, 16)  # seconds; RQ's Retry(interval=...) for every request


def honour_delay(job: Any, error: TemporaryError) -> float:
    """Stretch the job's next retry interval to ``error.delay``; the interval it will wait."""
    intervals = list(getattr(job, "retry_intervals", None) or [])
    retries_left = int(getattr(job, "retries_left", 0) or 0)
    if not intervals or retries_left <= 0:
        return 0.0
    index = min(max(len(intervals) - retries_left, 0), len(intervals) - 1)
    intervals[index] = max(int(intervals[index]), math.ceil(error.delay))
    job.retry_intervals = intervals
    return float(intervals[index])
