"""A rollback done while Slack is down is still reported in its thread once Slack is back:
in order, once."""

from __future__ import annotations

from jobs.adapters.prometheus import MetricsSource
from jobs.adapters.slack_outbox import Outbox
from jobs.runtime import context
from jobs.runtime.reports import deliver_owed, report
from jobs.runtime.ticker import Ticker
from meshbot.commands import Verb
from meshbot.settings import Settings
from playground.redis_server import free_port
from tests.fixtures.meshbot import CHANNEL, EmulatedMesh
from tests.integration.test_worker_jobs import SERVICE, outcomes, submit, thread_texts


def test_a_rollback_during_a_slack_outage_is_reported_when_slack_is_back(
        emulated_mesh: EmulatedMesh) -> None:
    mesh = emulated_mesh
    submit(mesh, Verb.CANARY, 10)
    mesh.run_jobs()
    before = thread_texts(mesh)
    mesh.slack.fail("chat.postMessage", "fatal_error", times=1, status=500)  # Slack is down
    rollback = submit(mesh, Verb.ROLLBACK)
    mesh.run_jobs()
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}  # done without Slack
    assert outcomes(mesh, rollback) == ["done"]
    assert thread_texts(mesh) == before  # nothing reached the thread yet
    assert Outbox(mesh.redis).pending() == 2

    assert deliver_owed(context.current()) == 2  # Slack is back: the ticker delivers
    after = thread_texts(mesh)
    assert len(after) == len(before) + 2
    assert "*Rollback*" in after[-2] or "rollback" in after[-2].lower()
    assert "stable 100 / canary 0" in after[-1]
    assert deliver_owed(context.current()) == 0  # once
    assert thread_texts(mesh) == after


def _slack_down(mesh: EmulatedMesh) -> None:
    """Every chat.postMessage answered 500 until ``_slack_back``."""
    mesh.slack.fail("chat.postMessage", "fatal_error", times=1000, status=500)


def _slack_back(mesh: EmulatedMesh) -> None:
    while mesh.slack.take_fault("chat.postMessage") is not None:
        pass


def _tick(mesh: EmulatedMesh) -> None:
    """One tick of a worker's ticker (the Prometheus it would ask is not there)."""
    with MetricsSource(f"http://127.0.0.1:{free_port()}", timeout=0.5) as source:
        Ticker(mesh.redis, Settings()).run_once(context.current(), source)


def test_the_ticker_delivers_what_a_thread_is_owed_once_slack_is_back(
        emulated_mesh: EmulatedMesh) -> None:
    mesh = emulated_mesh
    submit(mesh, Verb.CANARY, 10)
    mesh.run_jobs()
    before = thread_texts(mesh)
    _slack_down(mesh)
    rollback = submit(mesh, Verb.ROLLBACK)
    mesh.run_jobs()
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert outcomes(mesh, rollback) == ["done"]
    _tick(mesh)  # Slack still down: nothing reaches the thread, nothing is dropped
    assert thread_texts(mesh) == before
    assert Outbox(mesh.redis).pending() == 2

    _slack_back(mesh)
    _tick(mesh)
    after = thread_texts(mesh)
    assert after[:len(before)] == before and len(after) == len(before) + 2
    assert after[-2].startswith(":rewind: *Rollback*")
    assert "stable 100 / canary 0" in after[-1]
    assert Outbox(mesh.redis).pending() == 0
    _tick(mesh)
    assert thread_texts(mesh) == after  # once
    # The thread owes nothing any more: a later report goes out at once.
    roots = mesh.slack.roots(CHANNEL)
    assert report(context.current(), CHANNEL, roots[0].ts, "later") is True
    assert thread_texts(mesh)[-1] == "later"


def test_a_rollback_without_a_thread_during_an_outage_is_said_in_the_channel_later(
        emulated_mesh: EmulatedMesh) -> None:
    mesh = emulated_mesh
    _slack_down(mesh)
    rollback = submit(mesh, Verb.ROLLBACK)  # no rollout: no thread to report into
    mesh.run_jobs()
    assert outcomes(mesh, rollback) == ["done"]
    assert mesh.slack.messages(CHANNEL) == []
    assert Outbox(mesh.redis).pending() == 1

    _slack_back(mesh)
    _tick(mesh)
    [root] = mesh.slack.roots(CHANNEL)
    said = [m.text for m in mesh.slack.thread(CHANNEL, root.ts)]
    assert len(said) == 2 and said[0].startswith(":rewind: *Rollback*")
    assert "stable 100 / canary 0" in said[1]
    _tick(mesh)
    assert len(mesh.slack.messages(CHANNEL)) == 2  # once
    assert Outbox(mesh.redis).pending() == 0


def test_a_report_slack_stored_but_answered_500_for_is_delivered_once(
        emulated_mesh: EmulatedMesh) -> None:
    """What delivery cannot know from the answer: Slack kept the post and answered 500. The
    report stays owed, and the next delivery finds it in the thread (conversations.replies, by
    the key in its metadata) instead of posting it again."""
    mesh = emulated_mesh
    submit(mesh, Verb.CANARY, 10)
    mesh.run_jobs()
    [root] = mesh.slack.roots(CHANNEL)
    Outbox(mesh.redis).owe(CHANNEL, root.ts, "owed")
    mesh.slack.fail_after_serving("chat.postMessage", "fatal_error", status=500)
    _tick(mesh)
    assert Outbox(mesh.redis).pending() == 1
    assert thread_texts(mesh).count("owed") == 1  # Slack has it; delivery was told 500
    posts = len(mesh.slack.calls("chat.postMessage"))
    _tick(mesh)
    assert Outbox(mesh.redis).pending() == 0
    assert thread_texts(mesh).count("owed") == 1
    assert len(mesh.slack.calls("conversations.replies")) == 1
    assert len(mesh.slack.calls("chat.postMessage")) == posts  # found, not posted again


def test_a_report_owed_after_its_answer_was_lost_is_delivered_once(
        emulated_mesh: EmulatedMesh) -> None:
    """A job's report that Slack kept while answering 500 is owed under the key it was posted
    with: the delivery finds it in the thread and posts nothing."""
    mesh = emulated_mesh
    submit(mesh, Verb.CANARY, 10)
    mesh.run_jobs()
    before = thread_texts(mesh)
    mesh.slack.fail_after_serving("chat.postMessage", "fatal_error", status=500)
    rollback = submit(mesh, Verb.ROLLBACK)
    mesh.run_jobs()
    assert outcomes(mesh, rollback) == ["done"]
    assert Outbox(mesh.redis).pending() >= 1  # the one Slack kept, and what queued behind it
    kept = thread_texts(mesh)[len(before):]
    assert len(kept) == 1

    _tick(mesh)
    after = thread_texts(mesh)
    assert Outbox(mesh.redis).pending() == 0
    assert after[:len(before) + 1] == before + kept
    assert after.count(kept[0]) == 1, after
    assert len(mesh.slack.calls("conversations.replies")) == 1
