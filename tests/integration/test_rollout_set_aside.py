"""An undecodable rollout record is set aside only as it was read: a rollout written between
the tick's read and the setting aside (a rollback saving its state) is kept, still watched."""

from __future__ import annotations

import time

import redis

from jobs.adapters.keys import Keys
from jobs.adapters.rollout_store import RolloutStore
from jobs.domain.rollout import Rollout, start

SERVICE = "payment-service"
BAD = b'{"service": "payment-service", "pha'


def _rollout(now: float) -> Rollout:
    return start(rollout_id="r1", service=SERVICE, namespace="production", steps=(10,),
                 fixed=True, interval_s=30.0, failure_threshold=3, no_data_policy="hold",
                 deadline_s=600.0, requested_by="U0OPERATOR1", channel="C0MESHOPS", now=now)


def test_a_rollout_written_after_the_bad_record_was_read_is_not_set_aside(
        redis_client: redis.Redis, redis_url: str) -> None:
    keys = Keys()
    redis_client.set(keys.rollout(SERVICE), BAD)
    redis_client.zadd(keys.watched, {SERVICE: time.time() - 1})
    ticking = RolloutStore(redis_client)
    document = redis_client.get(keys.rollout(SERVICE))  # what the tick read: undecodable
    assert document == BAD

    # Another process (a rollback's job) saves a good state before the tick sets the bad aside.
    other = redis.Redis.from_url(redis_url)
    try:
        saved = _rollout(time.time())
        RolloutStore(other).put(saved)
    finally:
        other.close()

    set_aside = ticking.set_aside(SERVICE, BAD, "invalid JSON")

    assert ticking.get(SERVICE) == saved  # the write is not lost
    assert set_aside is False
    assert redis_client.zscore(keys.watched, SERVICE) is not None  # and still analysed
    assert redis_client.get(keys.rollout(SERVICE) + ":undecodable") is None
    assert list(ticking.get_many([SERVICE])) == [SERVICE]


def test_the_bad_record_as_read_is_set_aside_and_kept_for_a_person(
        redis_client: redis.Redis) -> None:
    keys = Keys()
    redis_client.set(keys.rollout(SERVICE), BAD)
    redis_client.zadd(keys.watched, {SERVICE: time.time() - 1})

    assert RolloutStore(redis_client).get_many([SERVICE]) == {}

    assert redis_client.get(keys.rollout(SERVICE)) is None
    assert redis_client.zscore(keys.watched, SERVICE) is None
    assert redis_client.get(keys.rollout(SERVICE) + ":undecodable") == BAD
