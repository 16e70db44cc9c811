"""A due scheduled job (a retry, a follow-up) moves to its queue whole or not at all: a
connection cut half-way through the release leaves it scheduled, and the next tick releases it."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue
from rq.serializers import JSONSerializer

from jobs.runtime.scheduled import release_due
from playground.tcp_proxy import CuttingProxy


def test_a_release_cut_half_way_loses_nothing(redis_url: str, redis_client: redis.Redis) -> None:
    queue = Queue("meshbot", connection=redis_client, serializer=JSONSerializer)
    job = queue.enqueue_at(datetime.now(UTC) - timedelta(seconds=5), "builtins.len", "due")
    where = urlparse(redis_url)
    with CuttingProxy(where.hostname or "127.0.0.1", where.port or 6379) as proxy:
        proxied = redis.Redis.from_url(where._replace(netloc=f"127.0.0.1:{proxy.port}").geturl(),
                                       socket_timeout=2, retry=Retry(NoBackoff(), 0))
        proxy.cut_on(b"RPUSH")  # the enqueue half of the release
        # Whether the cut surfaces as an error or as a release that did not happen, nothing
        # may be half done.
        with contextlib.suppress(redis.RedisError):
            release_due(proxied, ["meshbot"])
        assert proxy.cuts == 1
        proxied.close()
    assert queue.job_ids == []
    assert job.id in queue.scheduled_job_registry.get_job_ids()  # still scheduled, not lost
    assert release_due(redis_client, ["meshbot"]) == 1
    assert queue.job_ids == [job.id]
    assert job.id not in queue.scheduled_job_registry.get_job_ids()
