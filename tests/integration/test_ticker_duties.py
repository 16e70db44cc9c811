"""The ticker's duties stand alone: an undecodable rollout record is set aside (and kept for a
person), and the release of scheduled jobs, the reconcile and the approvals' expiry go on."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer

from jobs.adapters.keys import Keys
from jobs.adapters.prometheus import MetricsSource
from jobs.runtime import context
from jobs.runtime.ticker import Ticker
from meshbot.health_server import readiness
from meshbot.settings import Settings
from playground.redis_server import free_port
from tests.fixtures.slack import SlackEnv


def test_a_bad_rollout_record_stops_nothing_else(
        redis_client: redis.Redis, slack_env: SlackEnv, policy_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MESHBOT_POLICY", str(policy_path))
    keys = Keys()
    redis_client.set(keys.rollout("payment-service"), b'{"service": "payment-service", "pha')
    redis_client.zadd(keys.watched, {"payment-service": time.time() - 1})
    queue = Queue("meshbot", connection=redis_client, serializer=JSONSerializer)
    due = queue.enqueue_at(datetime.now(UTC) - timedelta(seconds=5), "builtins.len", "due")
    context.reset()
    settings = Settings()
    ticker = Ticker(redis_client, settings)
    with MetricsSource(f"http://127.0.0.1:{free_port()}", timeout=0.5) as source:
        ticker.run_once(context.current(), source)
        assert due.id in queue.job_ids  # released although the analysis met a bad record
        assert redis_client.zscore(keys.watched, "payment-service") is None
        assert redis_client.get(keys.rollout("payment-service")) is None
        kept = redis_client.get(keys.rollout("payment-service") + ":undecodable")
        assert isinstance(kept, bytes) and kept.startswith(b'{"service"')
        assert "set aside" in caplog.text
        caplog.clear()
        ticker.run_once(context.current(), source)  # the next tick is quiet
        assert "set aside" not in caplog.text and "failed" not in caplog.text
    context.reset()


def test_redis_coming_back_empty_is_noticed_and_said_once(
        redis_client: redis.Redis, redis_url: str, slack_env: SlackEnv, policy_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A Redis without persistence that restarts loses every rollout, approval and audit
    entry: the ticker notices its epoch is gone, says so in the channel once, and /readyz
    reports it."""
    monkeypatch.setenv("MESHBOT_POLICY", str(policy_path))
    context.reset()
    ticker = Ticker(redis_client, Settings())
    channel = context.current().policy.channels[0]
    slack_env.api.add_channel(channel, "mesh-ops")
    with MetricsSource(f"http://127.0.0.1:{free_port()}", timeout=0.5) as source:
        ticker.run_once(context.current(), source)
        assert readiness(redis_client)[1].get("state") is None
        assert slack_env.api.messages(channel) == []
        redis_client.flushall()  # what a restart without AOF leaves
        ticker.run_once(context.current(), source)
        ticker.run_once(context.current(), source)
    said = [m.text for m in slack_env.api.messages(channel)]
    assert len(said) == 1 and "meshbot lost its state" in said[0]
    ready, report = readiness(redis_client)
    assert ready and "Redis lost meshbot's state" in report["state"]
    context.reset()


def test_every_worker_that_saw_the_state_notices_it_vanished_and_it_is_said_once(
        redis_client: redis.Redis, slack_env: SlackEnv, policy_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers (the chart runs two): the lease key vanishes with the state, and the worker
    that takes it next is the other one. Both saw the old epoch, so both notice; the notice is
    said once, and kept while Slack is down."""
    monkeypatch.setenv("MESHBOT_POLICY", str(policy_path))
    context.reset()
    ctx = context.current()
    a, b = Ticker(redis_client, Settings()), Ticker(redis_client, Settings())  # two workers
    channel = ctx.policy.channels[0]
    slack_env.api.add_channel(channel, "mesh-ops")
    with MetricsSource(f"http://127.0.0.1:{free_port()}", timeout=0.5) as source:
        assert a.holds_lease() and not b.holds_lease()
        a.run_once(ctx, source)
        b.watch_state(ctx)
        redis_client.flushall()  # what a restart without AOF leaves
        slack_env.api.fail("chat.postMessage", "fatal_error", times=1000, status=500)
        assert b.holds_lease()  # the lease went with the state: b takes it
        b.run_once(ctx, source)
        a.watch_state(ctx)  # a, without the lease, notices too
        assert a.epoch.noticed is not None and b.epoch.noticed is not None
        assert slack_env.api.messages(channel) == []  # Slack is down: nothing said yet ...
        ready, report = readiness(redis_client)
        assert ready and "Redis lost meshbot's state" in report["state"]  # ... but /readyz says

        while slack_env.api.take_fault("chat.postMessage") is not None:  # Slack is back
            pass
        b.run_once(ctx, source)
        a.watch_state(ctx)
        b.run_once(ctx, source)
    said = [m.text for m in slack_env.api.messages(channel)]
    assert len(said) == 1 and "meshbot lost its state" in said[0]
    context.reset()


def test_a_held_status_update_is_shown_by_the_next_ticks(
        redis_client: redis.Redis, slack_env: SlackEnv, policy_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread root's status changed twice within Slack's update interval: the second waits
    (chat.update is paced), and the ticker shows it once the interval is over, without any
    further change to the message."""
    monkeypatch.setenv("MESHBOT_POLICY", str(policy_path))
    context.reset()
    ctx = context.current()
    ticker = Ticker(redis_client, Settings())
    channel = ctx.policy.channels[0]
    slack_env.api.add_channel(channel, "mesh-ops")
    root = ctx.notifier.post_root(channel, "Rollout: progressing, canary 10%", key="held-root")
    ctx.notifier.update(channel, root, "Rollout: progressing, canary 20%")
    ctx.notifier.update(channel, root, "Rollout: paused, canary 20%")  # within the interval

    def shown() -> str:
        [message] = slack_env.api.messages(channel)
        return message.text

    assert shown() == "Rollout: progressing, canary 20%"
    deadline = time.monotonic() + 10
    with MetricsSource(f"http://127.0.0.1:{free_port()}", timeout=0.5) as source:
        while shown() != "Rollout: paused, canary 20%":
            assert time.monotonic() < deadline, f"still shown: {shown()}"
            ticker.run_once(ctx, source)  # the worker's loop runs one a second
            time.sleep(0.2)  # the interval is real time; the loop waits on what Slack shows
    context.reset()
