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
from rq.exceptions import DeserializationError
from rq.job import Job
from rq.job_lifecycle import call_exception_handlers
from rq.serializers import JSONSerializer

from jobs.runtime.api import TASK, queue_names, read_state
from jobs.runtime.retry import honour_delay
from jobs.runtime.takeover import WorkerLease
from meshbot.errors import PermanentError, TemporaryError
from meshbot.health_server import start_health_server
from meshbot.logs import configure_logging
from meshbot.redis_client import connect, translate, unavailable
from meshbot.settings import Settings

log = logging.getLogger("meshbot.worker")

# RQ derives from its worker's TTL how long the worker blocks on its queues (``worker_ttl - 15``)
# and the socket timeout it gives its own connection (that and 10 more): with RQ's default of
# 420 s a worker whose Redis stops answering (hung, or gone with its TCP connection
# black-holed) sits ~415 s in one call. 16 s: a 1 s blocking pop, an 11 s socket timeout, so a
# hung Redis is noticed within ~12 s and the worker reconnects once it answers. Long jobs are
# not cut by it: a SimpleWorker's heartbeat during a job is the job's timeout + 60 s (RQ's
# ``get_heartbeat_ttl``), meshbot's takeover goes by its own lease, and a job talks to Redis
# with a client of its own; only RQ's own calls on that connection must answer within 11 s.
WORKER_TTL_S = 16


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
    """RQ's worker, except that meshbot's errors say whether and when a job is retried, a
    designed retry is not logged as a crash, and a stop asked for before RQ listened for
    signals is honoured.

    Every job passes here (RQ calls ``handle_exception`` before ``handle_job_failure``, which
    retries or fails the job), so this is the one place a job's error meets RQ's retries:

    - a ``TemporaryError`` (or a Redis failure waiting may mend) stretches the job's next retry
      to the error's ``delay`` (Slack's Retry-After, ...), the enqueued schedule being the
      floor; one log line, no traceback (a traceback per retry would bury the real bugs);
    - a ``PermanentError`` (or a command Redis rejects) is not retried: the job fails at once,
      said in one log line;
    - anything else is a bug: RQ's traceback, and RQ's retries.
    """

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        _exc_type, exc, _tb = _unpack(exc_info)
        error: BaseException | None = exc
        if isinstance(exc, redis.RedisError):
            error = translate(exc, "Redis failed during the job")
        if not isinstance(error, TemporaryError | PermanentError):
            super().handle_exception(job, *exc_info)
            return
        func = _func_name(job)
        if isinstance(error, PermanentError):
            job.retries_left = 0  # RQ fails it now: retrying cannot help
            log.error("job %s (%s) failed, not retried: %s", job.id, func, error.message)
        elif (job.retries_left or 0) > 0:
            wait = honour_delay(job, error)
            # handle_request has already said "will retry <id> in <n>s" with the request's id:
            # a second line would say it twice.
            if func != TASK:
                log.warning("job %s (%s) will be retried in %gs: %s", job.id, func, wait,
                            error.message)
        else:
            log.error("job %s (%s) failed, no retries left: %s", job.id, func, error.message)
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


def _func_name(job: Job) -> str:
    try:
        return str(job.func_name)
    except DeserializationError:
        return "<undeserializable>"


class RedisFailureLine(logging.Filter):
    """RQ's loop logs a Redis failure between jobs as a crash ("found an unhandled exception,
    quitting" and its traceback; "Redis connection timeout" as an error), once per outage and
    worker. It is how a restart of Redis looks, not a bug: one warning line, without traceback.
    Anything else RQ logs keeps its level and its traceback."""

    TIMEOUT = "Worker %s: Redis connection timeout, quitting..."
    # RQ's wait for a job, retrying (1, 2, 4 ... 60 s) while Redis is down or hung: logged as an
    # error, with no traceback, on every try.
    RETRYING = "Worker %s: could not connect to Redis instance: %s retrying in %d seconds..."

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and unavailable(exc):
            worker = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "Worker %s: Redis failed (%s: %s); this worker ends"
            record.args = (worker, type(exc).__name__, str(exc).strip() or "no detail")
            record.exc_info, record.exc_text = None, None
        elif record.msg not in (self.TIMEOUT, self.RETRYING):
            return True
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_redis_failures() -> None:
    """Put ``RedisFailureLine`` on RQ's worker logger (once)."""
    rq_log = logging.getLogger("rq.worker")
    if not any(isinstance(f, RedisFailureLine) for f in rq_log.filters):
        rq_log.addFilter(RedisFailureLine())


def build_worker(settings: Settings, connection: redis.Redis,
                 stop_signal: StopSignal | None = None) -> SimpleWorker:
    queues = [
        Queue(name, connection=connection, serializer=JSONSerializer)
        for name in queue_names(settings.queue_name)
    ]
    worker = MeshbotWorker(queues, connection=connection, serializer=JSONSerializer,
                           worker_ttl=WORKER_TTL_S)
    worker.stop_signal = stop_signal
    quiet_redis_failures()
    return worker


def run_worker(*, burst: bool = False, metrics_port: int | None = None) -> int:
    stop = StopSignal()
    stop.install()
    settings = Settings()
    configure_logging()
    # RQ raises its connection's socket timeout to wait on its queues (``_set_connection``; 11 s
    # with ``WORKER_TTL_S``): the ticker, the lease and the wait for Redis have a client of their
    # own, which notices a hung Redis in 5 s.
    connection = connect(settings.redis_url, "worker")
    control = connect(settings.redis_url, "ticker")
    if metrics_port is not None:
        start_health_server(settings, metrics_port, read_state)  # /healthz, /readyz, /metrics
    ticker = None
    if not burst:
        from jobs.runtime.ticker import Ticker

        ticker = Ticker(control, settings)
        ticker.start()
    try:
        while not stop.asked.is_set() and not _work(settings, connection, stop, burst=burst,
                                                   control=control):
            # Redis went away under RQ (a restart): RQ gives up on its worker, not meshbot. A
            # new one starts once Redis answers; the old one's started job is taken over when
            # its lease lapses (``jobs.runtime.takeover``), so nothing is lost or run twice.
            _wait_for(control, stop)
    finally:
        if ticker is not None:
            ticker.stop()
    return 0


def _work(settings: Settings, connection: redis.Redis, stop: StopSignal, *,
          burst: bool, control: redis.Redis | None = None) -> bool:
    """One RQ worker's life; False when Redis failing ended it (start another). ``control``
    keeps the lease (RQ's ``connection`` waits long on its queues)."""
    control = control or connection
    try:
        # RQ's own connection waits 11 s on a hung Redis (and a new worker's first call is
        # made on it): ask with the short-timeout client first.
        control.ping()
        worker = build_worker(settings, connection, stop)
        lease = WorkerLease(control, worker.name).start()  # taken over if it lapses
    except redis.RedisError as exc:  # a hung Redis (TimeoutError) too: no worker started
        if not unavailable(exc):
            raise
        log.warning("Redis failed before a worker started (%s); one starts once Redis answers",
                    type(exc).__name__)
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
    # its heartbeat or bookkeeping), logs "quitting" (one warning line: ``RedisFailureLine``)
    # and returns as if it had been asked to stop; nobody asked, so the process must not exit:
    # another worker takes over.
    log.info("worker %s stopped without being asked (see RQ's line before); a new worker "
             "starts once Redis answers", worker.name)
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
