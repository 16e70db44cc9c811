"""Owed reports are delivered thread by thread: one thread Slack refuses for now holds up only
itself (in order and once within it), while a rate limit holds every thread until it passes."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from jobs.adapters.slack_notifier import Notifier, RateWindows
from jobs.adapters.slack_outbox import MAX_FAILED_THREADS, Outbox
from playground.slack_api import SlackApiStandIn

TOKEN = "xoxb-owed-per-thread-test"
CHANNEL = "C1"


@pytest.fixture
def notifier(slack_api: SlackApiStandIn, redis_client: redis.Redis) -> Notifier:
    return Notifier(TOKEN, slack_api.base_url, redis_client=redis_client, max_inline_wait=0.0)


def _threads(notifier: Notifier, *names: str) -> dict[str, str]:
    return {name: notifier.post_root(CHANNEL, f"Thread {name}") for name in names}


def _replies(slack_api: SlackApiStandIn, root: str) -> list[str]:
    return [m.text for m in slack_api.thread(CHANNEL, root)[1:]]


def test_a_thread_slack_refuses_for_now_does_not_hold_the_others(
        slack_api: SlackApiStandIn, notifier: Notifier, redis_client: redis.Redis) -> None:
    roots = _threads(notifier, "A", "B", "C")
    outbox = Outbox(redis_client)
    outbox.owe(CHANNEL, roots["A"], "a1")
    outbox.owe(CHANNEL, roots["B"], "b1")
    outbox.owe(CHANNEL, roots["A"], "a2")
    outbox.owe(CHANNEL, roots["C"], "c1")
    slack_api.fail_in_thread(CHANNEL, roots["A"], "fatal_error", times=2)  # A's posts: 500

    assert outbox.deliver(notifier) == 2
    assert _replies(slack_api, roots["B"]) == ["b1"]
    assert _replies(slack_api, roots["C"]) == ["c1"]
    assert _replies(slack_api, roots["A"]) == []  # a2 waits behind a1, in its own thread
    assert outbox.owes(CHANNEL, roots["A"]) and not outbox.owes(CHANNEL, roots["B"])

    assert outbox.deliver(notifier) == 0  # A is still refused; nothing else is owed
    assert outbox.deliver(notifier) == 2  # A's turn: in order
    assert _replies(slack_api, roots["A"]) == ["a1", "a2"]

    assert outbox.deliver(notifier) == 0 and outbox.pending() == 0  # once
    assert [_replies(slack_api, roots[n]) for n in "ABC"] == [["a1", "a2"], ["b1"], ["c1"]]


def test_threads_refused_again_and_again_go_to_the_back_of_the_line(
        slack_api: SlackApiStandIn, notifier: Notifier, redis_client: redis.Redis) -> None:
    """Slack refusing thread after thread looks like Slack down: a delivery stops after a few,
    and the refused threads let the others go first next time."""
    names = [f"T{i}" for i in range(MAX_FAILED_THREADS + 2)]
    roots = _threads(notifier, *names)
    outbox = Outbox(redis_client)
    broken = names[:MAX_FAILED_THREADS]
    for name in names:
        outbox.owe(CHANNEL, roots[name], f"{name} report")
    for name in broken:
        slack_api.fail_in_thread(CHANNEL, roots[name], "fatal_error", times=1000)
    posts = len(slack_api.calls("chat.postMessage"))

    assert outbox.deliver(notifier) == 0
    assert len(slack_api.calls("chat.postMessage")) == posts + MAX_FAILED_THREADS

    assert outbox.deliver(notifier) == 2  # the others' turn came
    for name in names:
        assert _replies(slack_api, roots[name]) == ([] if name in broken else [f"{name} report"])
    assert outbox.pending() == len(broken)


def test_a_rate_limit_holds_every_thread_until_it_passes(
        slack_api: SlackApiStandIn, notifier: Notifier, redis_client: redis.Redis) -> None:
    roots = _threads(notifier, "A", "B")
    outbox = Outbox(redis_client)
    outbox.owe(CHANNEL, roots["A"], "a1")
    outbox.owe(CHANNEL, roots["B"], "b1")
    slack_api.rate_limit("chat.postMessage", retry_after=0.5)  # Slack's limit: the workspace's
    posts = len(slack_api.calls("chat.postMessage"))

    assert outbox.deliver(notifier) == 0
    assert outbox.deliver(notifier) == 0  # inside the window: no thread is even tried
    assert len(slack_api.calls("chat.postMessage")) == posts + 1
    assert _replies(slack_api, roots["A"]) == [] and _replies(slack_api, roots["B"]) == []

    windows, deadline = RateWindows(redis_client), time.monotonic() + 5
    while (left := windows.remaining("chat.postMessage")) > 0:  # Slack's window, to its end
        assert time.monotonic() < deadline, "the rate window never closed"
        threading.Event().wait(left)
    assert outbox.deliver(notifier) == 2
    assert _replies(slack_api, roots["A"]) == ["a1"] and _replies(slack_api, roots["B"]) == ["b1"]


def _owed_by_an_earlier_version(client: redis.Redis, root: str, text: str) -> None:
    """A reply owed as earlier versions owed it: in their one queue."""
    client.rpush("meshbot:outbox", (
        f'{{"id": "{text.replace(" ", "-")}", "channel": "{CHANNEL}", '
        f'"thread_ts": "{root}", "text": "{text}"}}'))
    client.hincrby("meshbot:outbox:owed", f"{CHANNEL} {root}", 1)


def test_reports_owed_by_an_earlier_version_in_its_one_queue_are_delivered(
        slack_api: SlackApiStandIn, notifier: Notifier, redis_client: redis.Redis) -> None:
    """An upgrade loses nothing: the one queue of earlier versions is moved to the front of
    each report's thread, before anything owed since."""
    roots = _threads(notifier, "A", "B")
    for name, text in (("A", "old a1"), ("B", "old b1"), ("A", "old a2")):
        _owed_by_an_earlier_version(redis_client, roots[name], text)
    outbox = Outbox(redis_client)
    assert outbox.owes(CHANNEL, roots["A"])
    outbox.owe(CHANNEL, roots["A"], "new a3")

    assert outbox.deliver(notifier) == 4
    assert _replies(slack_api, roots["A"]) == ["old a1", "old a2", "new a3"]
    assert _replies(slack_api, roots["B"]) == ["old b1"]
    assert outbox.pending() == 0 and not outbox.owes(CHANNEL, roots["A"])


def test_what_an_earlier_version_still_running_owes_later_is_delivered_too(
        slack_api: SlackApiStandIn, notifier: Notifier, redis_client: redis.Redis) -> None:
    """A rolling upgrade: this version delivers while an older process still runs and owes into
    its one queue; what it owes after this version's first delivery is delivered as well."""
    roots = _threads(notifier, "A")
    outbox = Outbox(redis_client)
    outbox.owe(CHANNEL, roots["A"], "new a1")
    assert outbox.deliver(notifier) == 1  # this version's first delivery
    _owed_by_an_earlier_version(redis_client, roots["A"], "old a2")
    assert outbox.pending() == 1
    assert outbox.deliver(notifier) == 1
    assert _replies(slack_api, roots["A"]) == ["new a1", "old a2"]
    assert outbox.pending() == 0 and not outbox.owes(CHANNEL, roots["A"])


def test_a_delivery_runs_no_move_when_no_earlier_version_left_anything(
        slack_api: SlackApiStandIn, notifier: Notifier, redis_client: redis.Redis) -> None:
    roots = _threads(notifier, "A")
    outbox = Outbox(redis_client)
    outbox.owe(CHANNEL, roots["A"], "new a1")
    redis_client.script_flush()  # the suite's own Redis: no script loaded yet
    assert outbox.deliver(notifier) == 1
    assert outbox.deliver(notifier) == 0
    assert _replies(slack_api, roots["A"]) == ["new a1"]
    [moved] = redis_client.script_exists(outbox._move_queue.sha)
    assert not moved  # the move script never ran, not even once
