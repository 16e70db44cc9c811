"""meshbot's own metrics: what the counters count, what the Redis gauges read, and the JSON log
lines that carry the request and rollout ids. Real Redis; exposition parsed as Prometheus would.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from jobs.adapters.prometheus import MetricsSource
from jobs.adapters.rollout_store import RolloutStore
from jobs.domain import rollout as machine
from jobs.domain.rollout import Phase
from jobs.runtime import api
from jobs.runtime.analysis import tick
from jobs.runtime.context import JobContext
from meshbot import metrics
from meshbot.commands import Command, Request, Verb
from meshbot.logs import JsonFormatter
from meshbot.settings import Settings
from playground.redis_server import free_port
from policies.loader import load_policy_file
from tests.fixtures.meshbot import CHANNEL, CONTRACT_POLICY, OPERATOR

QUEUE = "meshbot"


def samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by name and labels."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def request(verb: Verb, target: str = "payment-service", percent: int | None = None) -> Request:
    return Request(id=f"test-{verb.value}-{time.time_ns()}",
                   command=Command(verb=verb, target=target, percent=percent),
                   user=OPERATOR, channel=CHANNEL, received_at=time.time())


def a_rollout(service: str, now: float, rollout_id: str = "r-1") -> machine.Rollout:
    return machine.start(rollout_id=rollout_id, service=service, namespace="production",
                         steps=(10,), fixed=True, interval_s=1.0, failure_threshold=3,
                         no_data_policy="hold", deadline_s=600.0, requested_by=OPERATOR,
                         channel="", now=now)


# -- read from Redis at scrape time


def test_queue_depth_and_rollouts_by_phase_are_read_from_redis(redis_client: redis.Redis) -> None:
    for _ in range(3):
        assert api.submit(redis_client, request(Verb.CANARY, percent=10), queue=QUEUE)
    assert api.submit(redis_client, request(Verb.ROLLBACK), queue=QUEUE)
    store = RolloutStore(redis_client)
    now = time.time()
    store.put(a_rollout("payment-service", now))
    store.put(machine.apply(a_rollout("user-service", now), machine.Event.ROLLBACK, now))

    got = samples(metrics.render(lambda: api.read_state(redis_client, QUEUE))[0])

    assert got[("meshbot_redis_up", frozenset())] == 1
    assert got[("meshbot_queue_depth", frozenset({("queue", "meshbot")}))] == 3
    assert got[("meshbot_queue_depth", frozenset({("queue", "meshbot-urgent")}))] == 1
    assert got[("meshbot_rollouts", frozenset({("phase", "progressing")}))] == 1
    assert got[("meshbot_rollouts", frozenset({("phase", "rolled_back")}))] == 1
    assert got[("meshbot_rollouts", frozenset({("phase", "promoted")}))] == 0
    assert got[("meshbot_rollouts_watched", frozenset())] == 1


def test_redis_down_is_redis_up_zero_not_made_up_zeros() -> None:
    down = redis.Redis(port=free_port(), socket_connect_timeout=1)
    got = samples(metrics.render(lambda: api.read_state(down, QUEUE))[0])
    assert got[("meshbot_redis_up", frozenset())] == 0
    assert not [name for name, _ in got if name.startswith(("meshbot_queue", "meshbot_rollouts"))]
    # This process's own counters are still there.
    assert any(name == "meshbot_last_tick_timestamp" for name, _ in got)


# -- counted where it happens


def test_a_request_job_counts_its_outcome_by_verb() -> None:
    outcomes = {"canary": "payment-service: stable 90 / canary 10", "status": "refused",
                "promote": "awaiting approval", "rollout": "failed"}

    @metrics.counts_job
    def job(payload: dict[str, Any]) -> str:
        return outcomes[payload["command"]["verb"]]

    before = {(v, o): value("meshbot_commands_total", verb=v, outcome=o)
              for v, o in [("canary", "done"), ("status", "refused"),
                           ("promote", "awaiting_approval"), ("rollout", "failed")]}
    failures = value("meshbot_job_failures_total", verb="rollout")
    for verb in outcomes:
        job({"command": {"verb": verb}})
    for (verb, outcome), count in before.items():
        assert value("meshbot_commands_total", verb=verb, outcome=outcome) == count + 1
    assert value("meshbot_job_failures_total", verb="rollout") == failures + 1


def test_a_job_raising_for_a_retry_is_a_job_failure_and_still_raises() -> None:
    @metrics.counts_job
    def job(payload: dict[str, Any]) -> str:
        raise TimeoutError("the API server did not answer")

    failures = value("meshbot_job_failures_total", verb="canary")
    done = value("meshbot_commands_total", verb="canary", outcome="done")
    with pytest.raises(TimeoutError):
        job({"command": {"verb": "canary"}})
    assert value("meshbot_job_failures_total", verb="canary") == failures + 1
    assert value("meshbot_commands_total", verb="canary", outcome="done") == done


def test_reactions_count_by_outcome_but_not_reactions_elsewhere() -> None:
    counted = value("meshbot_approvals_total", outcome="counted")
    metrics.approval("counted")
    metrics.approval("not_a_request")
    assert value("meshbot_approvals_total", outcome="counted") == counted + 1
    assert value("meshbot_approvals_total", outcome="not_a_request") == 0


# -- the analysis tick: counted, timed, timestamped, and its log lines carry the rollout id


@pytest.fixture
def analysis_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("meshbot.analysis")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_a_tick_is_counted_timed_and_logs_json_with_the_rollout_id(
        redis_client: redis.Redis, analysis_log: io.StringIO) -> None:
    ctx = JobContext(settings=Settings(), policy=load_policy_file(CONTRACT_POLICY),
                     redis=redis_client)
    started = time.time()
    ctx.store.put(a_rollout("payment-service", started - 5, rollout_id="rollout-42"))
    ticks = value("meshbot_analysis_ticks_total", result="ok")
    timed = value("meshbot_analysis_tick_duration_seconds_count")
    # Nothing listens there: Prometheus unreachable is no data, and the rollout holds.
    with MetricsSource(f"http://127.0.0.1:{free_port()}", timeout=1) as source:
        report = tick(ctx, source)

    assert report.due == 1 and report.prometheus_error
    assert ctx.store.get("payment-service").phase is Phase.HOLDING  # type: ignore[union-attr]
    assert value("meshbot_analysis_ticks_total", result="ok") == ticks + 1
    assert value("meshbot_analysis_tick_duration_seconds_count") == timed + 1
    assert value("meshbot_last_tick_timestamp") >= started
    lines = [json.loads(line) for line in analysis_log.getvalue().splitlines()]
    line = next(x for x in lines if x.get("rollout_id") == "rollout-42")
    assert line["service"] == "payment-service"
    assert line["level"] == "info" and line["logger"] == "meshbot.analysis"
    assert "no_data" in line["msg"] and "holding" in line["msg"]


def test_a_tick_that_fails_does_not_move_the_last_tick_timestamp() -> None:
    @metrics.timed_tick
    def broken_tick() -> None:
        raise ConnectionError("Redis went away")

    last = value("meshbot_last_tick_timestamp")
    errors = value("meshbot_analysis_ticks_total", result="error")
    with pytest.raises(ConnectionError):
        broken_tick()
    assert value("meshbot_analysis_ticks_total", result="error") == errors + 1
    assert value("meshbot_last_tick_timestamp") == last


# -- serve's shared metric files


def test_shared_metric_files_refuse_once_prometheus_client_is_imported() -> None:
    from meshbot.multiproc import use_shared_metric_files

    with pytest.raises(RuntimeError, match="one gunicorn worker only"):
        use_shared_metric_files()  # this test process has imported it long ago


def test_shared_metric_files_start_empty(tmp_path: Path) -> None:
    """The operator's directory is emptied of an earlier run's files, which would add to ours."""
    stale = tmp_path / "counter_4242.db"
    stale.write_bytes(b"old counts")
    code = ("from meshbot.multiproc import use_shared_metric_files; import os; "
            "files = use_shared_metric_files(); print(files.directory, files.created, "
            "os.environ['PROMETHEUS_MULTIPROC_DIR'])")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
                         timeout=30).stdout.split()
    assert out == [str(tmp_path), "False", str(tmp_path)]
    assert not stale.exists()


def test_a_scrape_while_a_worker_creates_its_metric_file_still_answers(tmp_path: Path) -> None:
    """A gunicorn worker booting creates its file empty and sizes it a moment later; a scrape in
    between must still count every other worker (it used to fail with ``struct.error``)."""
    code = ("import meshbot.metrics as m, pathlib, os; "
            "m.COMMANDS.labels(verb='canary', outcome='accepted').inc(3); "
            "(pathlib.Path(os.environ['PROMETHEUS_MULTIPROC_DIR']) / 'counter_999999.db')"
            ".touch(); print(m.render()[0].decode())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert 'meshbot_commands_total{outcome="accepted",verb="canary"} 3.0' in out.stdout
