"""Take a dead worker's jobs over within seconds, instead of RQ's minutes.

RQ moves a job it dequeues into the queue's intermediate list and then into the started
registry. A worker killed between the two leaves the job in the list (RQ's maintenance looks
there every ten minutes); a worker killed mid-job leaves it "started", holding its service's
lock, until its heartbeat — the job timeout plus a minute — runs out. Instead, every worker
keeps a short lease in Redis (``WorkerLease``), and the ticker (``take_over``) puts back on the
front of its queue every started job whose worker's lease is gone and every job that sat in an
intermediate list for a few seconds without starting. Jobs are idempotent per request (a retried
request takes its own lock back and repeats no step it finished), so running one again is safe.

A command's thread is told once that its worker stopped and another is taking it over (only
what was observed: the lease lapsed, the job went back on the queue), under a key per taken-over
run, so Slack being away (the note is owed) or a second ticker cannot say it twice.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable

import redis
from rq import Queue
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs.adapters.slack_outbox import Outbox
from jobs.runtime import context
from jobs.runtime.api import TASK
from jobs.runtime.handlers.common import thread_of
from meshbot import cluster_scope
from meshbot.commands import Request
from meshbot.errors import TemporaryError
from rendering import workers as worker_text

log = logging.getLogger("meshbot.takeover")

ALIVE_PREFIX = "meshbot:worker-alive:"
LEASE_S = 5.0  # a worker not heard of for this long is dead
BEAT_S = 1.0
STUCK_S = 5.0  # dequeued but not started for this long: its worker died in between
_FIRST_SEEN = "meshbot:intermediate-seen:"


class WorkerLease:
    """A worker's heartbeat: one key with a short TTL, renewed by a daemon thread."""

    def __init__(self, connection: redis.Redis, worker_name: str) -> None:
        self.connection = connection
        self.key = ALIVE_PREFIX + worker_name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meshbot-lease", daemon=True)

    def beat(self) -> None:
        self.connection.set(self.key, "1", px=int(LEASE_S * 1000))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except redis.RedisError as exc:  # Redis away: the lease lapses, as it should
                log.warning("worker lease not renewed: %s", type(exc).__name__)
            self._stop.wait(BEAT_S)

    def start(self) -> WorkerLease:
        self.beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(redis.RedisError):  # it lapses by itself anyway
            self.connection.delete(self.key)


def take_over(connection: redis.Redis, queue_names: Iterable[str],
              now: float | None = None) -> list[str]:
    """Requeue (at the front) the jobs of workers that are gone; their ids. Each command's
    thread is told (``say_taken_over``)."""
    moment = time.time() if now is None else now
    taken: list[tuple[Job, str, bool]] = []  # (job, which run of it, had it started)
    for name in queue_names:
        queue = Queue(name, connection=connection, serializer=JSONSerializer)
        taken += _abandoned_started(connection, queue)
        taken += _stuck_dequeued(connection, queue, moment)
    for job, run, started in taken:
        log.warning("took over job %s from a worker that is gone", job.id)
        try:
            say_taken_over(job, run, started=started)
        except Exception:  # telling must never stop the takeover (the job is requeued)
            log.exception("could not tell the thread of job %s that it was taken over", job.id)
    return [job.id for job, _, _ in taken]


def say_taken_over(job: Job, run: str, *, started: bool) -> bool:
    """Tell the thread of the command ``job`` runs (if it has one yet) that its worker stopped
    and another is taking it over; owed when Slack does not take it now. Once per taken-over
    ``run``. True if there was a thread to tell."""
    if job.func_name != TASK or not job.args or not isinstance(job.args[0], dict):
        return False  # not a command (an expiry, an alert's job): no thread of its own
    request = Request.model_validate(job.args[0])
    with cluster_scope.scope(request.command.cluster):
        ctx = context.current().for_cluster(request.command.cluster)
        channel, ts = thread_of(ctx, request)
        if not (channel and ts):
            return False
        text = (worker_text.taken_over(request.command) if started
                else worker_text.taken_over_unstarted(request.command))
        key = f"takeover:{job.id}:{run}"
        outbox = Outbox(ctx.redis)
        if not outbox.owes(channel, ts):  # else behind what the thread already waits for
            try:
                ctx.notifier.reply(channel, ts, text, key=key)
                return True
            except TemporaryError as exc:
                log.warning("Slack did not take the takeover note of %s (%s): it is kept and "
                            "will be delivered", job.id, exc.message)
        outbox.owe(channel, ts, text, label=ctx.notifier.label, key=key)
        return True


def _abandoned_started(connection: redis.Redis, queue: Queue) -> list[tuple[Job, str, bool]]:
    registry = queue.started_job_registry
    taken = []
    for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
        job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer) \
            if connection.exists(Job.key_for(job_id)) else None
        if job is None or job.get_status(refresh=False) != JobStatus.STARTED:
            continue
        if job.worker_name and connection.exists(ALIVE_PREFIX + job.worker_name):
            continue
        if _requeue(connection, queue, job, registry.key, f"{job_id}:{execution_id}"):
            taken.append((job, str(execution_id), True))
    return taken


def _stuck_dequeued(connection: redis.Redis, queue: Queue,
                    now: float) -> list[tuple[Job, str, bool]]:
    intermediate = IntermediateQueue(queue.key, connection)
    started = set(queue.started_job_registry.get_job_ids(cleanup=False))
    taken = []
    for job_id in intermediate.get_job_ids():
        if job_id in started:
            continue
        seen_key = _FIRST_SEEN + job_id
        connection.set(seen_key, str(now), nx=True, ex=3600)
        first = connection.get(seen_key)
        if first is None or now - float(first) < STUCK_S:
            continue
        job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer) \
            if connection.exists(Job.key_for(job_id)) else None
        if job is None:
            connection.lrem(intermediate.key, 0, job_id)
            continue
        if _requeue(connection, queue, job, intermediate.key, job_id, listed=True):
            connection.delete(seen_key)
            seen = first.decode() if isinstance(first, bytes) else str(first)
            taken.append((job, f"dequeued-{seen}", False))
    return taken


def _requeue(connection: redis.Redis, queue: Queue, job: Job, where: str, member: str, *,
             listed: bool = False) -> bool:
    """Out of ``where`` and onto the queue's front in one MULTI/EXEC; False if it moved."""
    with connection.pipeline() as pipe:
        try:
            pipe.watch(where)  # type: ignore[no-untyped-call]
            present = (member.encode() in pipe.lrange(where, 0, -1) if listed
                       else pipe.zscore(where, member) is not None)
            if not present:
                pipe.unwatch()
                return False
            pipe.multi()
            if listed:
                pipe.lrem(where, 0, member)
            else:
                pipe.zrem(where, member)
            queue.enqueue_job(job, pipeline=pipe, at_front=True)
            pipe.execute()
        except redis.WatchError:
            return False
    return True
