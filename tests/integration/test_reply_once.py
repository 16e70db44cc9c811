"""A reply is posted once per key, even when Slack stored it and its answer was lost: the retry
looks for it in ``conversations.replies`` by the metadata it was posted with."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from rq import Queue, Retry, SimpleWorker
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from jobs.adapters.slack_notifier import REPLY_EVENT, Notifier
from meshbot.errors import TemporaryError
from playground.slack_api import SlackApiStandIn

TOKEN = "xoxb-reply-once-test"


@pytest.fixture
def notifier(slack_api: SlackApiStandIn, redis_client: redis.Redis) -> Notifier:
    return Notifier(TOKEN, slack_api.base_url, redis_client=redis_client)


def _replies(slack_api: SlackApiStandIn, root: str) -> list[str]:
    return [m.text for m in slack_api.thread("C1", root)[1:]]


def reply_kept_but_answered_500(slack_api: SlackApiStandIn, notifier: Notifier) -> str:
    """A thread whose "Weights applied" reply Slack kept but answered 500 for; its root."""
    root = notifier.post_root("C1", "Canary payment-service")
    slack_api.fail_after_serving("chat.postMessage", "fatal_error", status=500)
    with pytest.raises(TemporaryError):
        notifier.reply("C1", root, "Weights applied", key="job-1:1")
    return root


def test_a_reply_slack_stored_but_answered_500_for_is_not_posted_again(
        slack_api: SlackApiStandIn, notifier: Notifier) -> None:
    root = reply_kept_but_answered_500(slack_api, notifier)

    ts = notifier.reply("C1", root, "Weights applied", key="job-1:1")

    [stored] = slack_api.thread("C1", root)[1:]
    assert stored.ts == ts and stored.text == "Weights applied"
    assert stored.metadata == {"event_type": REPLY_EVENT, "event_payload": {"key": "job-1:1"}}
    assert len(slack_api.calls("conversations.replies")) == 1
    assert len(slack_api.calls("chat.postMessage")) == 2  # the root, and the reply once


def test_an_unsure_reply_that_did_not_land_is_posted(
        slack_api: SlackApiStandIn, notifier: Notifier) -> None:
    root = notifier.post_root("C1", "Canary payment-service")
    slack_api.fail("chat.postMessage", "fatal_error", status=500)  # refused, not stored
    with pytest.raises(TemporaryError):
        notifier.reply("C1", root, "Weights applied", key="job-1:1")
    notifier.reply("C1", root, "Weights applied", key="job-2:1")  # another job's reply

    notifier.reply("C1", root, "Weights applied", key="job-1:1")

    assert _replies(slack_api, root) == ["Weights applied", "Weights applied"]
    assert len(slack_api.calls("conversations.replies")) == 1


def test_a_reply_that_landed_is_not_said_again_under_its_key(
        slack_api: SlackApiStandIn, notifier: Notifier) -> None:
    root = notifier.post_root("C1", "Canary payment-service")
    first = notifier.reply("C1", root, "Weights applied", key="job-1:1")
    again = notifier.reply("C1", root, "Weights applied", key="job-1:1")
    unkeyed = notifier.reply("C1", root, "Weights applied")  # outside a job: as it comes

    assert again == first and unkeyed != first
    assert _replies(slack_api, root) == ["Weights applied", "Weights applied"]
    assert slack_api.calls("conversations.replies") == []  # nothing was in doubt


def test_without_the_history_scope_the_reply_is_posted_rather_than_lost(
        slack_api: SlackApiStandIn, notifier: Notifier) -> None:
    root = reply_kept_but_answered_500(slack_api, notifier)
    slack_api.fail("conversations.replies", "missing_scope")

    notifier.reply("C1", root, "Weights applied", key="job-1:1")

    assert _replies(slack_api, root) == ["Weights applied", "Weights applied"]


class _Attempt:
    """What RQ's current job tells the notifier: its id and its attempt."""

    def __init__(self, started_at: str) -> None:
        self.id, self.started_at = "job-1", started_at


def _job_body(notifier: Notifier, root: str, checks: list[str], retried: bool) -> None:
    """One job's code, run by each attempt: its replies in the same order."""
    for check in checks:
        notifier.reply("C1", root, f"Holding: {check}")
    if retried:
        notifier.reply("C1", root, "Weights applied")  # only the retry gets this far


def test_a_job_says_a_thing_as_often_as_it_does_and_its_retry_not_again(
        slack_api: SlackApiStandIn, notifier: Notifier, monkeypatch: pytest.MonkeyPatch) -> None:
    root = notifier.post_root("C1", "Canary payment-service")
    attempt = _Attempt("first")
    monkeypatch.setattr("jobs.adapters.attempt_places.get_current_job", lambda: attempt)
    _job_body(notifier, root, ["no data (1)", "no data (2)"], retried=False)
    attempt.started_at = "retried"  # RQ's retry of the same job, rendering its numbers anew

    _job_body(notifier, root, ["no data (3)", "no data (4)"], retried=True)

    assert _replies(slack_api, root) == ["Holding: no data (1)", "Holding: no data (2)",
                                         "Weights applied"]


# -- a real RQ job, retried: the key is the job's and the reply's place, not its words --------

def _attempt_number(client: redis.Redis) -> int:
    """1 in the job's first attempt, 2 in its retry: what it reads live changes between them."""
    return int(client.incr("test:reply-once:attempts"))


def report_live_weights(base_url: str, redis_url: str, root: str) -> None:
    """A job reporting numbers it reads live: its retry renders them anew."""
    client = redis.Redis.from_url(redis_url)
    canary = 5 * _attempt_number(client)
    Notifier(TOKEN, base_url, redis_client=client).reply(
        "C1", root, f"Weights applied: stable {100 - canary} / canary {canary}")


def _run_with_one_retry(slack_api: SlackApiStandIn, redis_url: str, root: str,
                        function: Callable[[str, str, str], None]) -> None:
    connection = redis.Redis.from_url(redis_url)
    try:
        queue = Queue("reply-once", connection=connection, serializer=JSONSerializer)
        job = queue.enqueue(function, slack_api.base_url, redis_url, root, retry=Retry(max=1))
        SimpleWorker([queue], connection=connection, serializer=JSONSerializer).work(
            burst=True, logging_level="WARNING")
        assert job.get_status(refresh=True) == JobStatus.FINISHED
        assert int(connection.get("test:reply-once:attempts") or 0) == 2  # it was retried
    finally:
        connection.close()


def test_a_retry_whose_words_changed_does_not_post_the_reply_again(
        slack_api: SlackApiStandIn, notifier: Notifier, redis_url: str) -> None:
    root = notifier.post_root("C1", "Canary payment-service")
    slack_api.fail_after_serving("chat.postMessage", "fatal_error", status=500)  # kept, 500

    _run_with_one_retry(slack_api, redis_url, root, report_live_weights)

    assert _replies(slack_api, root) == ["Weights applied: stable 95 / canary 5"]
    assert len(slack_api.calls("conversations.replies")) == 1  # the retry looked, found it


def test_a_retry_saying_something_else_at_the_same_point_posts_it(
        slack_api: SlackApiStandIn, notifier: Notifier, monkeypatch: pytest.MonkeyPatch) -> None:
    root = notifier.post_root("C1", "Canary payment-service")
    attempt = _Attempt("first")
    monkeypatch.setattr("jobs.adapters.attempt_places.get_current_job", lambda: attempt)
    notifier.reply("C1", root, "Holding: no data (1)")
    attempt.started_at = "retried"  # the retry finds the rollout rolled back meanwhile

    notifier.reply("C1", root, "Rolled back: canary error rate 12 % over 1 %")

    assert _replies(slack_api, root) == ["Holding: no data (1)",
                                         "Rolled back: canary error rate 12 % over 1 %"]
