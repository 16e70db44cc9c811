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
        assert kept is not None and kept.startswith(b'{"service"')
        assert "set aside" in caplog.text
        caplog.clear()
        ticker.run_once(context.current(), source)  # the next tick is quiet
        assert "set aside" not in caplog.text and "failed" not in caplog.text
    context.reset()
