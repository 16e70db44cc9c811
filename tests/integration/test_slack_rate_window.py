"""Slack's ``Retry-After`` is honoured by every worker, not only by the job that met the 429:
the window is kept in Redis, and a call inside it is not sent (waited out when short, deferred
with the time left when long)."""

from __future__ import annotations

import pytest
import redis

from jobs.adapters.slack_notifier import Notifier, RateWindows
from meshbot.errors import SlackRateLimited
from playground.slack_api import SlackApiStandIn

TOKEN = "xoxb-rate-window-test"
CHANNEL = "C0MESHOPS"


class Waits:
    """Stands in for time.sleep: remembers each wait and returns at once."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def _worker(slack_api: SlackApiStandIn, client: redis.Redis, waits: Waits) -> Notifier:
    """A notifier as one worker process has it: its own Slack client, the shared Redis."""
    return Notifier(TOKEN, slack_api.base_url, sleep=waits, redis_client=client)


def test_a_long_window_met_by_one_worker_defers_the_others_without_calling(
        slack_api: SlackApiStandIn, redis_client: redis.Redis) -> None:
    first, other = Waits(), Waits()
    slack_api.rate_limit("chat.postMessage", retry_after=10)
    with pytest.raises(SlackRateLimited):
        _worker(slack_api, redis_client, first).post_root(CHANNEL, "rollout started")

    with pytest.raises(SlackRateLimited) as deferred:
        _worker(slack_api, redis_client, other).post_root(CHANNEL, "another rollout")

    assert 8 < deferred.value.delay <= 10  # what is left of Slack's 10 s, not a fresh guess
    assert len(slack_api.calls("chat.postMessage")) == 1  # the other worker did not call
    assert other.seconds == []  # nor held its worker waiting
    # The window is the method's: another method is called as usual.
    _worker(slack_api, redis_client, other).ephemeral("hi", channel=CHANNEL, user="U0ALICE")
    assert len(slack_api.calls("chat.postEphemeral")) == 1


def test_a_short_window_is_waited_out_by_the_other_workers_before_they_call(
        slack_api: SlackApiStandIn, redis_client: redis.Redis) -> None:
    first, other = Waits(), Waits()
    slack_api.rate_limit("chat.postMessage", retry_after=2)
    _worker(slack_api, redis_client, first).post_root(CHANNEL, "rollout started")
    assert first.seconds == [2]  # its own 429, waited out inline as before

    _worker(slack_api, redis_client, other).post_root(CHANNEL, "another rollout")

    [wait] = other.seconds
    assert 0 < wait <= 2  # the rest of the window, before its one call
    assert [c.status for c in slack_api.calls("chat.postMessage")] == [429, 200, 200]


def test_a_shorter_429_never_shortens_the_window(redis_client: redis.Redis) -> None:
    windows = RateWindows(redis_client)
    windows.open("chat.postMessage", 10)
    windows.open("chat.postMessage", 1)  # a later, shorter answer from Slack
    assert windows.remaining("chat.postMessage") > 8
    assert windows.remaining("chat.update") == 0
