"""``meshbot worker``: an RQ worker (JSON serializer) plus meshbot's ticker, which runs the
analysis and releases RQ's scheduled jobs (retries, expiries) when they are due.

Jobs are short (no job sleeps through an interval), so a ``SimpleWorker`` runs them in-process:
no fork per job, and the Kubernetes and Slack clients are built once per process.
"""

from __future__ import annotations

import logging

import redis
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from jobs.runtime.api import queue_names, read_state
from jobs.runtime.takeover import WorkerLease
from meshbot.health_server import start_health_server
from meshbot.logs import configure_logging
from meshbot.settings import Settings

log = logging.getLogger("meshbot.worker")


def build_worker(settings: Settings, connection: redis.Redis) -> SimpleWorker:
    queues = [
        Queue(name, connection=connection, serializer=JSONSerializer)
        for name in queue_names(settings.queue_name)
    ]
    return SimpleWorker(queues, connection=connection, serializer=JSONSerializer)


def run_worker(*, burst: bool = False, metrics_port: int | None = None) -> int:
    settings = Settings()
    configure_logging()
    connection = redis.Redis.from_url(settings.redis_url)
    if metrics_port is not None:
        start_health_server(settings, metrics_port, read_state)  # /healthz, /readyz, /metrics
    worker = build_worker(settings, connection)
    lease = WorkerLease(connection, worker.name).start()  # the ticker takes over if it lapses
    ticker = None
    if not burst:
        from jobs.runtime.ticker import Ticker

        ticker = Ticker(connection, settings)
        ticker.start()
    try:
        # A long-running worker leaves scheduled jobs to its ticker (jobs/scheduled.py says why);
        # a burst run releases the due ones itself, in-process.
        worker.work(burst=burst, with_scheduler=burst, logging_level="WARNING")
    finally:
        if ticker is not None:
            ticker.stop()
        lease.stop()
    return 0
