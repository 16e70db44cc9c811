"""Between two checks the tick looks at every watched rollout's comparison: a conclusive look
rolls the canary back at that tick, before its next check is due; a look that concludes
nothing writes nothing to Redis. Real Redis, Kubernetes emulator and Slack stand-in; the
counters are canned (a stand-in for Prometheus's answers)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis

from jobs.adapters.prometheus import MetricsSource
from jobs.domain.promql import CanaryMetrics, RawCounts, SeriesKey
from jobs.domain.rollout import Event, Phase, Rollout
from jobs.runtime import context
from jobs.runtime.analysis import tick
from meshbot.commands import Verb
from playground.redis_server import free_port
from tests.fixtures.meshbot import EmulatedMesh
from tests.integration.test_worker_jobs import SERVICE, submit

T = TypeVar("T")
WRITES = ("set", "evalsha", "eval", "zadd", "zrem", "hset", "del", "mset")


class CannedCounters(MetricsSource):
    """Answers the counters query with ``counters``; no guard query may be sent (no check
    is due in these tests)."""

    def __init__(self) -> None:
        super().__init__(f"http://127.0.0.1:{free_port()}", timeout=1, scrape_interval=1.0)
        self.counters: dict[SeriesKey, RawCounts] = {}
        self.asked: list[str] = []

    def concurrently(self, calls: Sequence[Callable[[], T]]) -> list[T]:
        return [call() for call in calls]

    def counts(self, watched: Sequence[tuple[str, str]], bounds_ms: Sequence[float],
               versions: Sequence[str] = (), at: float | None = None
               ) -> dict[SeriesKey, RawCounts]:
        self.queries_made += 1
        self.asked.append("counts")
        return {k: v for k, v in self.counters.items() if (k[0], k[1]) in set(watched)}

    def fetch(self, *args: Any, **kwargs: Any) -> dict[SeriesKey, CanaryMetrics]:
        self.asked.append("guards")
        raise AssertionError("no check is due: the guards' queries must not be sent")

    def query_range(self, promql: str, start: float, end: float,
                    step: float) -> list[dict[str, Any]]:
        return []  # the rollback's chart: empty lines


def _writes(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")
    return {name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in WRITES}


def _counts(rollout: Rollout, canary: tuple[float, float], stable: tuple[float, float]
            ) -> dict[SeriesKey, RawCounts]:
    key = (rollout.service, rollout.namespace)
    return {(*key, rollout.canary_version): RawCounts(*canary),
            (*key, rollout.stable_version): RawCounts(*stable)}


def test_a_conclusive_look_between_checks_rolls_back_at_the_tick(
        emulated_mesh: EmulatedMesh) -> None:
    mesh = emulated_mesh
    submit(mesh, Verb.CANARY, 10)
    mesh.run_jobs()
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    ctx = context.current()
    started = ctx.store.get(SERVICE)
    assert started is not None and started.canary_version and started.stable_version
    due = started.next_check_at  # the policy's interval: 30 s after the start
    with CannedCounters() as source:
        source.counters = _counts(started, (1000.0, 1.0), (9000.0, 9.0))
        taken = tick(ctx, source, now=due - 20)  # the step's baseline, as it begins
        assert taken.due == 0 and source.asked == ["counts"]
        baseline = ctx.store.get(SERVICE)
        assert baseline is not None and baseline.baseline is not None

        # A look that concludes nothing: not a single write about the rollout.
        source.counters = _counts(started, (1100.0, 1.1), (9900.0, 9.9))
        document = mesh.redis.get(ctx.store.keys.rollout(SERVICE))
        before = _writes(mesh.redis)
        quiet = tick(ctx, source, now=due - 10)
        after = _writes(mesh.redis)
        assert quiet.due == 0 and quiet.looked == 1 and not quiet.events
        assert quiet.queries == 1  # the counters of every watched rollout, one query
        assert mesh.redis.get(ctx.store.keys.rollout(SERVICE)) == document
        changed = {name: after[name] - before[name] for name in WRITES
                   if after[name] != before[name]}
        assert changed == {"set": 1}, changed  # the tick's own timestamp, nothing else

        # 20 % of the canary's requests fail since the baseline, 0.1 % of the stable's.
        source.counters = _counts(started, (1300.0, 41.0), (11700.0, 11.7))
        report = tick(ctx, source, now=due - 5)  # still 5 s before the next check
    assert report.due == 0 and report.events == {Event.REGRESSION.value: 1}
    assert "guards" not in source.asked
    rolled = ctx.store.get(SERVICE)
    assert rolled is not None and rolled.phase is Phase.ROLLED_BACK
    assert rolled.history[-1].event is Event.REGRESSION and rolled.history[-1].at == due - 5
    assert rolled.failed_checks == 0  # no check had failed: the comparison alone decided
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert ctx.store.watched() == []


def test_a_rollout_whose_weights_are_not_written_yet_is_not_judged(
        emulated_mesh: EmulatedMesh) -> None:
    """Between a writer's commit and its write (a slow API server; or a writer that died, until
    the reconcile settles it) the canary's numbers are the old weight's: the tick judges it
    once the write landed, not before (it once passed a step at 50 % on numbers taken at 10 %).
    """
    mesh = emulated_mesh
    submit(mesh, Verb.CANARY, 10)
    mesh.run_jobs()
    ctx = context.current()
    started = ctx.store.get(SERVICE)
    assert started is not None
    due = started.next_check_at
    with CannedCounters() as source:
        source.counters = _counts(started, (1000.0, 1.0), (9000.0, 9.0))
        tick(ctx, source, now=due - 20)  # the step's baseline
        source.counters = _counts(started, (1300.0, 41.0), (11700.0, 11.7))  # conclusive
        ctx.store.mark_unapplied(SERVICE, due - 6, owner="a-job-mid-write")
        held = tick(ctx, source, now=due - 5)
        assert held.looked == 0 and not held.events
        unjudged = ctx.store.get(SERVICE)
        assert unjudged is not None and unjudged.phase is Phase.PROGRESSING
        assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
        ctx.store.mark_applied(SERVICE, "a-job-mid-write")
        report = tick(ctx, source, now=due - 4)
    assert report.events == {Event.REGRESSION.value: 1}
    rolled = ctx.store.get(SERVICE)
    assert rolled is not None and rolled.phase is Phase.ROLLED_BACK
