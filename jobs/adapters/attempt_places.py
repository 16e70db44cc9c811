"""Where a job's attempt has got to: the n-th time it does the same thing.

RQ runs a job again after a failure, and the ticker hands a dead worker's job to another; either
way the attempt does the same things in the same order. So (job, what, n) names the same step in
every attempt, and a step an earlier attempt finished (a message posted, an audit entry written)
is recognised instead of being done twice.
"""

from __future__ import annotations

import threading

from rq import get_current_job


class AttemptPlaces:
    """Counts, per thread and per attempt of the running job, how often each thing was done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_thread: dict[int, tuple[str, dict[str, int]]] = {}  # → (attempt, counts)

    def place(self, what: str) -> tuple[str, int] | None:
        """(the running job's id, how many times its attempt has done ``what``, this one
        included); None outside a job (the ticker's own work: no attempt to be retried)."""
        job = get_current_job()
        if job is None:
            return None
        attempt = f"{job.id} {job.started_at}"
        thread = threading.get_ident()
        with self._lock:
            seen, counts = self._by_thread.get(thread, ("", {}))
            if seen != attempt:
                counts = {}
                self._by_thread[thread] = (attempt, counts)
            counts[what] = counts.get(what, 0) + 1
            return str(job.id), counts[what]
