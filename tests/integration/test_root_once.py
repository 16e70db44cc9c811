"""A thread root is posted once per job, even when Slack stored it and answered 500: the retry
looks for it in ``conversations.history`` by the metadata it was posted with."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer

from jobs.adapters.slack_notifier import ROOT_EVENT, Notifier
from jobs.runtime import api
from jobs.runtime.scheduled import release_due
from meshbot.commands import Command, Request, Verb
from meshbot.errors import TemporaryError
from playground.slack_api import SlackApiStandIn
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh

TOKEN = "xoxb-root-once-test"


def _release_retries(mesh: Mesh) -> int:
    """Make the scheduled retries due now (they would be in a second or two)."""
    later = datetime.now(UTC) + timedelta(minutes=1)
    return release_due(mesh.redis, api.queue_names("meshbot"), now=later)


def test_a_root_slack_stored_but_answered_500_for_is_not_posted_again(mesh: Mesh) -> None:
    request = Request(id=f"locks-{time.time_ns()}", command=Command(verb=Verb.LOCKS),
                      user=OPERATOR, channel=CHANNEL, received_at=time.time())
    assert api.submit(mesh.redis, request)
    mesh.slack.fail_after_serving("chat.postMessage", "fatal_error", status=500)
    mesh.run_jobs()
    assert len(mesh.slack.roots(CHANNEL)) == 1  # Slack has it; the job was told 500
    assert _release_retries(mesh) == 1

    mesh.run_jobs()

    [root] = mesh.slack.roots(CHANNEL)
    assert root.metadata is not None and root.metadata["event_type"] == ROOT_EVENT
    assert len(mesh.slack.calls("conversations.history")) == 1
    assert len(mesh.slack.calls("chat.postMessage")) == 1  # the retry found it, posted nothing
    job = Queue("meshbot", connection=mesh.redis,
                serializer=JSONSerializer).fetch_job(api.job_id(request.id))
    assert job is not None and job.get_status() == "finished"


@pytest.fixture
def notifier(slack_api: SlackApiStandIn, redis_client: redis.Redis) -> Notifier:
    return Notifier(TOKEN, slack_api.base_url, redis_client=redis_client)


def test_a_root_that_landed_is_reused_by_a_later_attempt(
        slack_api: SlackApiStandIn, notifier: Notifier) -> None:
    first = notifier.post_root("C1", "Canary payment-service", key="job-1:C1:1")
    again = notifier.post_root("C1", "Canary payment-service (retried)", key="job-1:C1:1")
    other = notifier.post_root("C1", "Canary cart-service", key="job-2:C1:1")

    assert again == first and other != first
    assert [m.ts for m in slack_api.roots("C1")] == [first, other]
    assert slack_api.calls("conversations.history") == []  # nothing was in doubt


def test_an_unsure_root_that_did_not_land_is_posted(
        slack_api: SlackApiStandIn, notifier: Notifier) -> None:
    slack_api.fail("chat.postMessage", "fatal_error", status=500)  # refused, not stored
    with pytest.raises(TemporaryError):
        notifier.post_root("C1", "Canary payment-service", key="job-1:C1:1")
    notifier.post_root("C1", "Canary cart-service", key="job-2:C1:1")  # another job's root

    ts = notifier.post_root("C1", "Canary payment-service", key="job-1:C1:1")

    assert [m.ts for m in slack_api.roots("C1")][-1] == ts
    assert len(slack_api.roots("C1")) == 2
    assert len(slack_api.calls("conversations.history")) == 1


def test_without_the_history_scope_the_root_is_posted_rather_than_lost(
        slack_api: SlackApiStandIn, notifier: Notifier) -> None:
    slack_api.fail_after_serving("chat.postMessage", "fatal_error", status=500)
    with pytest.raises(TemporaryError):
        notifier.post_root("C1", "Canary payment-service", key="job-1:C1:1")
    slack_api.fail("conversations.history", "missing_scope")

    notifier.post_root("C1", "Canary payment-service", key="job-1:C1:1")

    assert len(slack_api.roots("C1")) == 2  # a duplicate, said in the log; never no root
