"""meshbot's own Prometheus metrics (prefix ``meshbot_``) and their exposition on ``/metrics``.

Two kinds:

- counted in the process that does the thing — commands by verb and outcome (the bot counts
  accepted/refused/duplicate, the worker done/failed/awaiting_approval), approvals by outcome,
  rollbacks by kind, analysis ticks, their duration, job failures and
  ``meshbot_last_tick_timestamp``. Prometheus sums them over pods.
- read from Redis at scrape time by whoever serves ``/metrics`` — queue depth, rollouts by
  phase, rollouts under watch, and ``meshbot_redis_up``. Every pod reports the same installation-
  wide values, so aggregate them with ``max``, not ``sum``.

``meshbot serve`` runs several gunicorn processes; see ``meshbot.multiproc`` for how their
counters are merged.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from meshbot.multiproc import ENV as MULTIPROC_ENV

P = ParamSpec("P")
R = TypeVar("R")

COMMANDS = Counter("meshbot_commands", "Slash commands by verb and outcome",
                   ["verb", "outcome"])
APPROVALS = Counter("meshbot_approvals", "Reactions on approval requests by what they did",
                    ["outcome"])
ROLLBACKS = Counter("meshbot_rollbacks", "Rollbacks carried out: automatic (analysis) or manual",
                    ["kind"])
TICKS = Counter("meshbot_analysis_ticks", "Analysis ticks run by this process", ["result"])
TICK_SECONDS = Histogram(
    "meshbot_analysis_tick_duration_seconds", "Time one analysis tick took",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
JOB_FAILURES = Counter(
    "meshbot_job_failures",
    "Job runs that failed: given up, or raised to RQ for a retry", ["verb"],
)
# Only the worker holding the tick lease sets it; the others (and serve) stay at 0, so the
# chart's alert takes the max over pods. "max" is also how gunicorn processes are merged.
LAST_TICK = Gauge("meshbot_last_tick_timestamp",
                  "Unix time the last analysis tick of this process finished",
                  multiprocess_mode="max")

# What ``jobs.tasks.handle_request`` returns, when it is not the handler's own summary.
_JOB_OUTCOMES = {"refused": "refused", "failed": "failed", "unsupported": "failed",
                 "voided": "refused", "awaiting approval": "awaiting_approval",
                 "waiting": "waiting", "not run": "refused", "unreadable": "refused"}
# Reactions that are not about an approval request at all are not counted.
_NOT_APPROVALS = frozenset({"not_a_request", "other_emoji"})


def command(verb: str, outcome: str) -> None:
    COMMANDS.labels(verb=verb, outcome=outcome).inc()


def approval(outcome: str) -> None:
    if outcome not in _NOT_APPROVALS:
        APPROVALS.labels(outcome=outcome).inc()


def rollback(kind: str) -> None:
    ROLLBACKS.labels(kind=kind).inc()


def counts_job(job: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
    """Count a request job's outcome by verb (decorates ``jobs.tasks.handle_request``)."""

    @functools.wraps(job)
    def counted(payload: dict[str, Any]) -> str:
        verb = str((payload.get("command") or {}).get("verb", "unknown"))
        try:
            result = job(payload)
        except BaseException:
            JOB_FAILURES.labels(verb=verb).inc()  # RQ retries it or marks it failed
            raise
        outcome = _JOB_OUTCOMES.get(result, "done")
        if outcome == "failed":
            JOB_FAILURES.labels(verb=verb).inc()
        command(verb, outcome)
        return result

    return counted


def timed_tick(tick: Callable[P, R]) -> Callable[P, R]:
    """Count and time an analysis tick; a tick that finishes sets ``meshbot_last_tick_timestamp``
    (one that raises does not: analysis did not happen)."""

    @functools.wraps(tick)
    def timed(*args: P.args, **kwargs: P.kwargs) -> R:
        started = time.perf_counter()
        try:
            report = tick(*args, **kwargs)
        except BaseException:
            TICKS.labels(result="error").inc()
            raise
        finally:
            TICK_SECONDS.observe(time.perf_counter() - started)
        TICKS.labels(result="ok").inc()
        LAST_TICK.set(time.time())
        return report

    return timed


@dataclass(frozen=True)
class StateSample:
    """Installation-wide state read from Redis (``jobs.gauges.read_state``)."""

    queue_depths: Mapping[str, int]
    rollouts_by_phase: Mapping[str, int]
    watched: int


# None: Redis did not answer.
StateReader = Callable[[], StateSample | None]


class RedisStateCollector(Collector):
    """Gauges read from Redis when scraped, so every process serving /metrics reports them."""

    def __init__(self, read: StateReader) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        sample = self.read()
        up = GaugeMetricFamily("meshbot_redis_up", "1 if Redis answered this scrape, else 0")
        up.add_metric([], 0.0 if sample is None else 1.0)
        yield up
        if sample is None:
            return  # no numbers rather than made-up zeros
        depth = GaugeMetricFamily("meshbot_queue_depth", "Jobs waiting in a meshbot RQ queue",
                                  labels=["queue"])
        for queue, count in sorted(sample.queue_depths.items()):
            depth.add_metric([queue], float(count))
        yield depth
        phases = GaugeMetricFamily("meshbot_rollouts", "Rollouts recorded in Redis by phase",
                                   labels=["phase"])
        for phase, count in sorted(sample.rollouts_by_phase.items()):
            phases.add_metric([phase], float(count))
        yield phases
        yield GaugeMetricFamily("meshbot_rollouts_watched",
                                "Rollouts under analysis (progressing or holding)",
                                value=float(sample.watched))


class _EveryWorkersFiles(Collector):
    """Every gunicorn worker's metric files, merged (counters summed, the gauge's max taken).

    A worker creates its file empty and sizes it a moment later; prometheus_client's own
    collector fails the whole scrape on such a file (``struct.error``), so files not yet sized
    are left to the next scrape: they hold no samples yet.
    """

    def __init__(self, directory: str) -> None:
        self._directory = Path(directory)

    def collect(self) -> Iterator[Any]:
        files = [str(path) for path in sorted(self._directory.glob("*.db")) if _sized(path)]
        yield from MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]


def _sized(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


class _Forward(Collector):
    """This process's default registry, inside a per-scrape registry."""

    def collect(self) -> Iterator[Any]:
        yield from REGISTRY.collect()


def render(read_state: StateReader | None = None) -> tuple[bytes, str]:
    """The ``/metrics`` body and its content type, for this process (or all of ``serve``'s)."""
    registry = CollectorRegistry(auto_describe=False)
    shared = os.environ.get(MULTIPROC_ENV)
    if shared:
        registry.register(_EveryWorkersFiles(shared))
    else:
        registry.register(_Forward())
    if read_state is not None:
        registry.register(RedisStateCollector(read_state))
    return generate_latest(registry), CONTENT_TYPE_LATEST
