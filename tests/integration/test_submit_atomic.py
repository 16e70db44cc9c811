"""An acked command is never lost: the dedupe mark and the enqueue land together or not at all.

A connection cut half-way through the submit (Redis dying, the network dropping) must leave no
mark behind, so Slack's retry of the same request is taken, not answered "duplicate".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue
from rq.serializers import JSONSerializer

from jobs.runtime import api
from meshbot.commands import Command, Request, Verb
from meshbot.errors import QueueUnavailable
from playground.tcp_proxy import CuttingProxy


def canary_request(request_id: str) -> Request:
    return Request(id=request_id, command=Command(verb=Verb.CANARY, target="payment-service",
                                                  percent=10),
                   user="U0OPERATOR1", channel="C0MESHOPS", received_at=time.time())


@contextmanager
def cut_on(redis_url: str, marker: bytes, *, after: bool = False) -> Iterator[redis.Redis]:
    """A client whose connection to Redis is cut, once, as it sends ``marker`` (``after``: once
    Redis has it, before its answer comes back)."""
    where = urlparse(redis_url)
    with CuttingProxy(where.hostname or "127.0.0.1", where.port or 6379) as proxy:
        # No client-side retries: the worst case, where Redis stays away.
        proxied_url = where._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
        through_proxy = redis.Redis.from_url(proxied_url, socket_timeout=2,
                                             retry=Retry(NoBackoff(), 0))
        through_proxy.ping()
        if after:
            proxy.cut_after(marker)
        else:
            proxy.cut_on(marker)
        try:
            yield through_proxy
        finally:
            through_proxy.close()
        assert proxy.cuts == 1


# Where the connection is cut: as the submit's script call starts, and inside it, among RQ's
# writes it carries (the job's hash, its place in the queue).
@pytest.mark.parametrize("marker", [b"EVALSHA", b"RPUSH", b"HSET"])
def test_a_submit_cut_half_way_leaves_nothing_and_the_retry_is_taken(
        redis_url: str, redis_client: redis.Redis, marker: bytes) -> None:
    request = canary_request(f"trigger-{marker.decode().lower()}")  # not the marker itself
    with cut_on(redis_url, marker) as through_proxy, pytest.raises(QueueUnavailable):
        api.submit(through_proxy, request)
    queue = Queue("meshbot", connection=redis_client, serializer=JSONSerializer)
    assert queue.count == 0  # nothing half-written
    # Slack retries the same request: it is taken, once.
    assert api.submit(redis_client, request) is True
    assert api.submit(redis_client, request) is False
    assert queue.job_ids == [api.job_id(request.id)]


@pytest.mark.parametrize("marker", [b"EVALSHA", b"RPUSH"])
def test_an_alert_cut_half_way_leaves_nothing_and_alertmanagers_retry_is_taken(
        redis_url: str, redis_client: redis.Redis, marker: bytes) -> None:
    """The same for an Alertmanager notification: its first-delivery mark and its job."""
    payload, digest = {"version": "4", "status": "firing", "alerts": []}, "ab" * 32
    with cut_on(redis_url, marker) as through_proxy, pytest.raises(QueueUnavailable):
        api.submit_alert(through_proxy, payload, digest)
    queue = Queue("meshbot", connection=redis_client, serializer=JSONSerializer)
    assert queue.count == 0
    assert api.submit_alert(redis_client, payload, digest) is True
    assert api.submit_alert(redis_client, payload, digest) is False
    assert queue.job_ids == ["alert-" + digest[:32]]
