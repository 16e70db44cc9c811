"""RQ's worker loop gives up on some Redis failures between jobs (a timeout in its heartbeat or
bookkeeping: ``except redis.exceptions.TimeoutError: ... quitting``, and a bare ``except`` for
the rest) and returns as if asked to stop. ``meshbot worker`` must then start another worker,
not exit; it exits only when asked (SIGTERM, SIGINT).

RQ's loop is stood in for here (its ``work`` returning as it does in those branches): reaching
those branches for real takes a Redis failure at one exact moment between two jobs."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from jobs.runtime import worker
from meshbot.settings import Settings


@pytest.mark.parametrize("asked", [False, True])
def test_a_worker_rq_gave_up_on_is_replaced_and_one_asked_to_stop_ends(
        redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch,
        asked: bool) -> None:
    def work(self: worker.MeshbotWorker, *args: Any, **kwargs: Any) -> bool:
        self._stop_requested = asked  # what RQ's SIGTERM handler sets, or nothing
        return False

    monkeypatch.setattr(worker.MeshbotWorker, "work", work)

    ended = worker._work(Settings(), redis_client, worker.StopSignal(), burst=False)

    assert ended is asked  # False: run_worker waits for Redis and starts a new worker


def test_a_stop_asked_for_before_rq_listens_stops_the_worker_before_its_first_job(
        redis_url: str, redis_client: redis.Redis) -> None:
    """Kubernetes may send SIGTERM while the worker is still registering, before RQ has put its
    own handlers in: the worker must stop at once, cleanly, and leave the queue's work for the
    next one (not take a job it was asked not to start, nor die with the default action)."""
    settings = Settings()
    queue = Queue(settings.queue_name, connection=redis_client, serializer=JSONSerializer)
    job = queue.enqueue("os.getcwd")
    stop = worker.StopSignal()
    stop.asked.set()  # as its handler does when the signal comes in that gap

    ended = worker._work(settings, redis_client, stop, burst=False)

    assert ended is True
    assert job.get_status(refresh=True) == "queued"
    assert queue.job_ids == [job.id]
    assert Worker.all(connection=redis_client) == []  # it said goodbye
