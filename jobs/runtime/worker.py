"""``meshbot worker``: an RQ worker (JSON serializer) plus meshbot's ticker, which runs the
analysis and releases RQ's scheduled jobs (retries, expiries) when they are due.

Jobs are short (no job sleeps through an interval), so a ``SimpleWorker`` runs them in-process:
no fork per job, and the Kubernetes and Slack clients are built once per process.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import TracebackType
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.job_lifecycle import call_exception_handlers
from rq.serializers import JSONSerializer

from jobs.runtime.api import TASK, queue_names, read_state
from jobs.runtime.takeover import WorkerLease
from meshbot.errors import TemporaryError
from meshbot.health_server import start_health_server
from meshbot.logs import configure_logging
from meshbot.settings import Settings

log = logging.getLogger("meshbot.worker")


class StopSignal:
    """SIGTERM or SIGINT, remembered for the whole process.

    RQ installs its own handlers only once its worker has registered in Redis, and a worker
    that Redis failing ended is replaced: without this, a SIGTERM that Kubernetes sends in
    either gap kills the process with the default action, lease and all.
    """

    def __init__(self) -> None:
        self.asked = threading.Event()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("%s received; stopping", signal.Signals(signum).name)
        self.asked.set()


class MeshbotWorker(SimpleWorker):
    """RQ's worker, except that a designed retry is not logged as a crash, and a stop asked
    for before RQ listened for signals is honoured.

    RQ logs every exception a job raises with its traceback. A ``TemporaryError`` is how a job
    asks to be retried later (Slack's 429, a Kubernetes 5xx): a traceback per retry would bury
    the real bugs in the log, so it gets one line instead; anything else keeps RQ's traceback.
    """

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        exc_type, exc, _tb = _unpack(exc_info)
        if exc_type is None or not issubclass(exc_type, TemporaryError):
            super().handle_exception(job, *exc_info)
            return
        # handle_request has already said "will retry <id> in <n>s" with the request's id
        # (the delay it chose is only known there): a second line would say it twice.
        if job.func_name != TASK:
            log.warning("job %s (%s) will be retried: %s", job.id, job.func_name,
                        getattr(exc, "message", str(exc)))
        call_exception_handlers(self._exc_handlers, job, *exc_info)  # as RQ's own does

    stop_signal: StopSignal | None = None

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()  # type: ignore[no-untyped-call]
        if self.stop_signal is not None and self.stop_signal.asked.is_set():
            # RQ's loop checks this before its first dequeue: the worker stops as if RQ's own
            # handler had seen the signal while it was idle.
            self._stop_requested = True


def _unpack(exc_info: tuple[Any, ...]) -> tuple[type[BaseException] | None,
                                                 BaseException | None, TracebackType | None]:
    if len(exc_info) == 3:
        return exc_info[0], exc_info[1], exc_info[2]
    return None, None, None


def build_worker(settings: Settings, connection: redis.Redis,
                 stop_signal: StopSignal | None = None) -> SimpleWorker:
    queues = [
        Queue(name, connection=connection, serializer=JSONSerializer)
        for name in queue_names(settings.queue_name)
    ]
    worker = MeshbotWorker(queues, connection=connection, serializer=JSONSerializer)
    worker.stop_signal = stop_signal
    return worker


def run_worker(*, burst: bool = False, metrics_port: int | None = None) -> int:
    stop = StopSignal()
    stop.install()
    settings = Settings()
    configure_logging()
    connection = redis.Redis.from_url(settings.redis_url)
    if metrics_port is not None:
        start_health_server(settings, metrics_port, read_state)  # /healthz, /readyz, /metrics
    ticker = None
    if not burst:
        from jobs.runtime.ticker import Ticker

        ticker = Ticker(connection, settings)
        ticker.start()
    try:
        while not stop.asked.is_set() and not _work(settings, connection, stop, burst=burst):
            # Redis went away under RQ (a restart): RQ gives up on its worker, not meshbot. A
            # new one starts once Redis answers; the old one's started job is taken over when
            # its lease lapses (``jobs.runtime.takeover``), so nothing is lost or run twice.
            _wait_for(connection, stop)
    finally:
        if ticker is not None:
            ticker.stop()
    return 0


def _work(settings: Settings, connection: redis.Redis, stop: StopSignal, *,
          burst: bool) -> bool:
    """One RQ worker's life; False when Redis failing ended it (start another)."""
    worker = build_worker(settings, connection, stop)
    try:
        lease = WorkerLease(connection, worker.name).start()  # taken over if it lapses
    except redis.ConnectionError:
        return False
    try:
        # A long-running worker leaves scheduled jobs to its ticker (jobs/scheduled.py says why);
        # a burst run releases the due ones itself, in-process.
        worker.work(burst=burst, with_scheduler=burst, logging_level="WARNING")
    except (redis.ConnectionError, redis.TimeoutError) as exc:  # BusyLoadingError too
        log.warning("Redis failed under worker %s (%s); a new worker starts once it answers",
                    worker.name, type(exc).__name__)
        return False
    finally:
        stop.install()  # RQ's handlers would act on a worker that has ended
        lease.stop()
    # A stop asked for by a signal: RQ marks a busy worker's (``_stop_requested``), but stops an
    # idle one by raising inside its loop, leaving only the time the signal came.
    if (burst or stop.asked.is_set() or worker._stop_requested
            or worker._shutdown_requested_date is not None):
        return True
    # RQ's loop swallows what fails between jobs (a Redis timeout or a dropped connection in
    # its heartbeat or bookkeeping), logs "quitting" and returns as if it had been asked to
    # stop; nobody asked, so the process must not exit: another worker takes over.
    log.warning("worker %s stopped without being asked (Redis failing under it, see RQ's log);"
                " a new worker starts once Redis answers", worker.name)
    return False


def _wait_for(connection: redis.Redis, stop: StopSignal) -> None:
    """Until Redis answers a PING (and has loaded its data) or a stop is asked for, polling
    once a second."""
    while not stop.asked.is_set():
        try:
            if connection.ping():
                return
        except redis.RedisError:
            pass
        stop.asked.wait(1.0)  # polling Redis; a signal ends the wait at once
