"""A reply is posted once per key, even when Slack stored it and its answer was lost: the retry
looks for it in ``conversations.replies`` by the metadata it was posted with."""

from __future__ import annotations

import pytest
import redis

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
    def __init__(self, started_at: str) -> None:
        self.id, self.started_at = "job-1", started_at


def test_a_job_says_a_thing_as_often_as_it_does_and_its_retry_not_again(
        slack_api: SlackApiStandIn, notifier: Notifier, monkeypatch: pytest.MonkeyPatch) -> None:
    root = notifier.post_root("C1", "Canary payment-service")
    attempt = _Attempt("first")
    monkeypatch.setattr("jobs.adapters.slack_notifier.get_current_job", lambda: attempt)
    notifier.reply("C1", root, "Holding")
    notifier.reply("C1", root, "Holding")  # said twice in one attempt: its second place
    attempt.started_at = "retried"  # RQ's retry of the same job

    notifier.reply("C1", root, "Holding")
    notifier.reply("C1", root, "Weights applied")

    assert _replies(slack_api, root) == ["Holding", "Holding", "Weights applied"]
