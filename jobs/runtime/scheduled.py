"""Release RQ's scheduled jobs (retries, ``enqueue_in``) when they are due, from the ticker.

RQ's own scheduler runs in a process forked from the worker. When a worker is killed, that
child survives it and keeps the dead worker's blocking ``BLPOP`` connection open (the socket is
inherited by the fork), so Redis hands the next job to a socket nobody reads: the job is lost.
Its lock also blocks every other worker's scheduler for about a minute. The ticker, which holds
a short lease, does the same work in-process with RQ's public registry API instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer


def release_due(connection: redis.Redis, queue_names: Iterable[str],
                now: datetime | None = None) -> int:
    """Move every scheduled job whose time has come to its queue; how many were moved."""
    moment = now or datetime.now(UTC)
    released = 0
    for name in queue_names:
        queue = Queue(name, connection=connection, serializer=JSONSerializer)
        registry = queue.scheduled_job_registry
        # RQ scores a scheduled job by its due time truncated to the second: the score's
        # second has to be over, or a retry asked for after N s (a Retry-After) runs early.
        job_ids = registry.get_jobs_to_schedule(int(moment.timestamp()) - 1)
        for job_id, job in zip(job_ids, Job.fetch_many(job_ids, connection=connection,
                                                       serializer=JSONSerializer), strict=True):
            if job is None:
                registry.remove(job_id)  # its data expired: nothing to release
            elif _release(connection, queue, registry.key, job):
                released += 1
    return released


def _release(connection: redis.Redis, queue: Queue, registry_key: str, job: Job) -> bool:
    """Take the job off the schedule and put it on its queue in one MULTI/EXEC: a crash or a
    dropped connection between the two can no longer lose it. False if another took it."""
    with connection.pipeline() as pipe:
        try:
            pipe.watch(registry_key)  # type: ignore[no-untyped-call]
            if pipe.zscore(registry_key, job.id) is None:
                pipe.unwatch()
                return False
            pipe.multi()
            pipe.zrem(registry_key, job.id)
            queue.enqueue_job(job, pipeline=pipe)
            pipe.execute()
        except redis.WatchError:
            return False
    return True
