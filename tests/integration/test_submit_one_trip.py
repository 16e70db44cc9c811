"""The submit is one round trip to Redis (the ack waits on it), and a retry of our own submit
whose answer was lost is recognised as ours, not answered "duplicate"."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlparse

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue
from rq.serializers import JSONSerializer

from jobs.runtime import api
from meshbot.commands import Command, Request, Verb
from playground.tcp_proxy import CuttingProxy


class CountingConnection(redis.Connection):
    """Counts what the client writes to the socket: one write per round trip."""

    writes = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


def canary(request_id: str) -> Request:
    return Request(id=request_id, command=Command(verb=Verb.CANARY, target="payment-service",
                                                  percent=10),
                   user="U0OPERATOR1", channel="C0MESHOPS", received_at=time.time())


def test_a_submit_is_one_round_trip(redis_url: str) -> None:
    client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(
        redis_url, connection_class=CountingConnection))
    api.submit(client, canary("warm-up"))  # loads the script, asks RQ's server version
    before = CountingConnection.writes

    assert api.submit(client, canary("trigger-1")) is True
    assert api.submit(client, canary("trigger-1")) is False  # Slack's retry

    assert CountingConnection.writes - before == 2
    client.close()


def test_the_sequence_is_kept_for_the_job(redis_client: redis.Redis) -> None:
    first, second = canary("trigger-a"), canary("trigger-b")
    assert api.submit(redis_client, first) and api.submit(redis_client, second)
    # The job gets the request as it was sent; its order is looked up beside it.
    assert 0 < api.sequence_of(redis_client, first) < api.sequence_of(redis_client, second)
    rollback = Request(id="trigger-c", command=Command(verb=Verb.ROLLBACK,
                                                       target="payment-service"),
                       user="U0OPERATOR1", channel="C0MESHOPS", received_at=time.time())
    assert api.submit(redis_client, rollback)
    assert api.overtaken(redis_client, first) and api.overtaken(redis_client, second)


def test_our_own_retry_after_a_lost_answer_is_not_a_duplicate(
        redis_url: str, redis_client: redis.Redis) -> None:
    where = urlparse(redis_url)
    request = canary("trigger-lost-answer")
    api.submit(redis_client, canary("warm-up"))  # the script is loaded: one EVALSHA to cut
    with CuttingProxy(where.hostname or "127.0.0.1", where.port or 6379) as proxy:
        # A client that retries a command on a dropped connection (redis-py's retry_on_error).
        proxied = redis.Redis.from_url(
            where._replace(netloc=f"127.0.0.1:{proxy.port}").geturl(), socket_timeout=2,
            retry=Retry(NoBackoff(), 1), retry_on_error=[redis.ConnectionError])
        proxied.ping()
        proxy.cut_after(b"EVALSHA")

        assert api.submit(proxied, request) is True

        assert proxy.cuts == 1
        proxied.close()
    queue = Queue("meshbot", connection=redis_client, serializer=JSONSerializer)
    assert queue.job_ids.count(api.job_id(request.id)) == 1


def test_a_submit_after_redis_lost_its_scripts_is_taken_once(redis_client: redis.Redis) -> None:
    """A restarted Redis (or SCRIPT FLUSH) has no submit script: it is loaded and the submit
    sent again, and the request is queued once, not refused or lost."""
    api.submit(redis_client, canary("warm-up"))
    redis_client.script_flush()
    request = canary("trigger-after-flush")

    assert api.submit(redis_client, request) is True
    assert api.submit(redis_client, request) is False  # Slack's retry: a duplicate

    queue = Queue("meshbot", connection=redis_client, serializer=JSONSerializer)
    assert queue.job_ids.count(api.job_id(request.id)) == 1
