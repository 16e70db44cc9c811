"""What one analysis tick costs over many rollouts under watch, beside the floor of its queries.

    python -m bench.monitor_scale [--rollouts 1000] [--failing 0] [--interval 5]

N fixed canaries (svc-0000…, phase progressing, check due) are put in a private Redis through
``jobs.store``, each with a status message in the Slack stand-in; a policy listing the N services
is written for the run; a real Prometheus (1 s scrape) reads a lean exposition of those services'
destination-reporter series (bench/_static_metrics.py: playground/traffic.py is too heavy to
scrape each second at this size). Then ``jobs.analysis.tick`` runs in this process with a real
JobContext — its Redis, Slack and Kubernetes calls go over the wire to the stand-ins — twice:
with every check due (a fresh worker: every status message changes), then one interval later.

Printed per tick: wall time, and where it went (Prometheus: the time the tick waits for its
answers — the comparisons worked out from the counters while the guards' queries are on their
way count in the rest —, Redis, Slack, the rest); PromQL queries; Redis round trips and
commands; Slack calls by method. Beside them, the floor: the same
PromQL sent over plain HTTP.
``--failing K`` makes K canaries fail their last allowed check, so the tick also rolls them back.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import redis

from bench._stack import CHANNEL, OPERATOR, Stack, base_stack, seed_services, write_policy
from bench._static_metrics import StaticMesh, StaticMetricsServer
from jobs.adapters.kube import KubeClient
from jobs.adapters.prometheus import MetricsSource
from jobs.adapters.rollout_store import RolloutStore
from jobs.adapters.slack_notifier import Notifier, UpdateOutcome
from jobs.domain.rollout import start
from jobs.runtime.analysis import TickReport, tick
from jobs.runtime.context import JobContext
from meshbot.settings import Settings
from playground.prometheus_server import PrometheusServer
from playground.sample_mesh import NAMESPACE
from policies.loader import load_policy_file

SCRAPE_S = 1.0
T = TypeVar("T")
AIM_S, AIM_QUERIES = 1.0, 4  # rate, p99, error ratios, the comparison's counters
AIM_RATIO = 1.2  # the tick's wall time against its own queries over plain HTTP
SLACK_TIER3_PER_MIN = 50  # chat.update's documented tier: "50+ per minute"


class Timer:
    """Seconds and calls accumulated by one kind of I/O during a tick."""

    def __init__(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0


REDIS_IO = Timer()


class CountingConnection(redis.connection.Connection):
    """Counts round trips (one per packed send: a pipeline is one) and the time spent in them."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        REDIS_IO.calls += 1
        started = time.perf_counter()
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]
        REDIS_IO.seconds += time.perf_counter() - started

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().read_response(*args, **kwargs)
        finally:
            REDIS_IO.seconds += time.perf_counter() - started


class RecordingSource(MetricsSource):
    """MetricsSource that keeps each query's text and the time it took."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timer = Timer()
        self.recorded: list[tuple[str, float | None]] = []

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        started = time.perf_counter()
        try:
            return super().query(promql, at)
        finally:
            if not threading.current_thread().name.startswith("prometheus"):
                self.timer.seconds += time.perf_counter() - started  # else: concurrently's
            self.timer.calls += 1
            self.recorded.append((promql, at))

    def concurrently(self, calls: Sequence[Callable[[], T]]) -> list[T]:
        """Timed as the wall time of the batch (the queries overlap), outermost call only."""
        if threading.current_thread().name.startswith("prometheus"):
            return super().concurrently(calls)
        started = time.perf_counter()
        try:
            return super().concurrently(calls)
        finally:
            self.timer.seconds += time.perf_counter() - started

    def started(self, calls: Sequence[Callable[[], T]]) -> list[Future[T]]:
        """Timed while the tick waits for an answer (its work meanwhile is "the rest")."""
        futures = super().started(calls)
        if threading.current_thread().name.startswith("prometheus"):
            return futures
        return [Waited(future, self.timer) for future in futures]


class Waited(Future[T]):
    """A future whose ``result()`` adds the time spent waiting for it to a timer."""

    def __init__(self, inner: Future[T], timer: Timer) -> None:
        super().__init__()
        self._inner, self._timer = inner, timer

    def result(self, timeout: float | None = None) -> T:
        started = time.perf_counter()
        try:
            return self._inner.result(timeout)
        finally:
            self._timer.seconds += time.perf_counter() - started


class TimedNotifier(Notifier):
    """The real Notifier, timing every Slack write the tick makes."""

    timer: ClassVar[Timer] = Timer()
    outcomes: ClassVar[Counter[str]] = Counter()

    def update(self, *args: Any, **kwargs: Any) -> UpdateOutcome:
        started = time.perf_counter()
        try:
            outcome = super().update(*args, **kwargs)
            self.outcomes[outcome.value] += 1
            return outcome
        finally:
            self.timer.seconds += time.perf_counter() - started

    def _post(self, *args: Any, **kwargs: Any) -> str:
        started = time.perf_counter()
        try:
            return super()._post(*args, **kwargs)
        finally:
            self.timer.seconds += time.perf_counter() - started


class TimedProxy:
    """Times every method call on the object it wraps (the KubeClient: set_weights only calls)."""

    def __init__(self, target: object, timer: Timer) -> None:
        self._target, self._timer = target, timer

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not callable(attribute):
            return attribute

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                self._timer.seconds += time.perf_counter() - started
                self._timer.calls += 1

        return timed


KUBE_IO = Timer()


def raw_query(url: str, promql: str, at: float | None) -> tuple[float, int, int]:
    """One instant query over plain HTTP (POST, as the URL may be long): seconds, series, bytes."""
    form = {"query": promql} | ({} if at is None else {"time": f"{at:.3f}"})
    body = urllib.parse.urlencode(form).encode()
    started = time.perf_counter()
    with urllib.request.urlopen(f"{url}/api/v1/query", data=body, timeout=30) as response:
        raw = response.read()
    seconds = time.perf_counter() - started
    answer = json.loads(raw)
    if answer.get("status") != "success":
        raise RuntimeError(f"Prometheus refused a query: {answer}")
    return seconds, len(answer["data"]["result"]), len(raw)


def seed(stack: Stack, services: list[str], failing: set[str], interval: float,
         threshold: int) -> None:
    """N fixed canaries at 10%, each due now, each with a status message in the channel."""
    now = time.time()
    store = RolloutStore(stack.redis)
    for service in services:
        title = f"Canary `{service}` at 10% (bench)"
        ts = stack.slack.post(CHANNEL, title).ts
        rollout = start(rollout_id=f"bench-{service}", service=service, namespace=NAMESPACE,
                        steps=(10,), fixed=True, interval_s=interval,
                        failure_threshold=threshold, no_data_policy="hold", deadline_s=600,
                        requested_by=OPERATOR, channel=CHANNEL, now=now - interval - 1)
        store.put(rollout.model_copy(update={
            "canary_version": "v2", "stable_version": "v1", "thread_ts": ts, "status_ts": ts,
            "title": title,
            "passed_checks": 1,
            # a failing canary is at its last allowed failure: this tick rolls it back
            "failed_checks": threshold - 1 if service in failing else 0}))


def wait_for_rates(url: str, expected: int, window: float, timeout: float = 60) -> None:
    """Until every series has samples over a whole rate window: over a series younger than its
    window ``rate()`` extrapolates to less than the truth, and every canary would look below
    min_request_rate (the first scrape comes seconds after Prometheus starts)."""
    span = int(window) + 2
    promql = (f'count(count_over_time(istio_requests_total{{reporter="destination"}}'
              f'[{span}s]) >= {span - 1})')
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/query?"
                                        + urllib.parse.urlencode({"query": promql}),
                                        timeout=10) as response:
                result = json.load(response)["data"]["result"]
            if result and int(float(result[0]["value"][1])) >= expected:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"Prometheus has not {span}s of all {expected} series "
                               f"after {timeout}s")
        time.sleep(0.5)  # polling Prometheus, bounded by the deadline


def run_tick(ctx: JobContext, source: RecordingSource, stack: Stack, now: float,
             label: str) -> tuple[TickReport, float]:
    calls_before = len(stack.slack.calls())
    commands_before = _commands(stack.redis)
    for timer in (source.timer, REDIS_IO, TimedNotifier.timer, KUBE_IO):
        timer.reset()
    TimedNotifier.outcomes.clear()
    source.recorded.clear()
    started = time.perf_counter()
    report = tick(ctx, source, now=now)
    wall = time.perf_counter() - started
    commands = _commands(stack.redis) - commands_before - 1  # not the INFO itself
    slack = Counter(c.method for c in stack.slack.calls()[calls_before:])
    prom, rds, slk = source.timer.seconds, REDIS_IO.seconds, TimedNotifier.timer.seconds
    kube = KUBE_IO.seconds
    rest = wall - prom - rds - slk - kube
    print(f"{label}: {report.due} due, events {dict(report.events) or '{}'}")
    print(f"  wall time {wall * 1000:7.1f} ms  = Prometheus {prom * 1000:.1f} + Redis "
          f"{rds * 1000:.1f} + Slack {slk * 1000:.1f} + Kubernetes {kube * 1000:.1f} "
          f"({KUBE_IO.calls} calls) + the rest {rest * 1000:.1f} ms   "
          f"(aim <= {AIM_S * 1000:.0f} ms: {'met' if wall <= AIM_S else 'NOT met'})")
    print(f"  PromQL queries {report.queries} (aim <= {AIM_QUERIES}: "
          f"{'met' if report.queries <= AIM_QUERIES else 'NOT met'}); Redis round trips "
          f"{REDIS_IO.calls}, commands {commands}; Slack calls "
          f"{sum(slack.values())} {dict(sorted(slack.items())) or ''}; status updates "
          f"{dict(TimedNotifier.outcomes) or '{}'}")
    return report, wall


def _commands(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


def floors(url: str, recorded: list[tuple[str, float | None]],
           at_once: bool = True) -> tuple[float, float]:
    """The floor: the tick's own queries sent again over plain HTTP, nothing else around them:
    one after the other, then (``at_once``) all at once, as the tick sends them — not before
    another tick: that burst would slow the next tick's queries down."""
    if not recorded:
        print("floor: the tick made no query")
        return math.nan, math.nan
    texts, at = [q for q, _ in recorded], recorded[0][1]
    parts = [raw_query(url, q, at) for q in texts]
    together = math.nan
    if at_once:
        started = time.perf_counter()
        with ThreadPoolExecutor(len(texts)) as pool:
            list(pool.map(lambda q: raw_query(url, q, at), texts))
        together = time.perf_counter() - started
    print(f"floor, the tick's {len(parts)} queries over plain HTTP: "
          f"{sum(p[0] for p in parts) * 1000:.1f} ms one after the other ("
          + ", ".join(f"{p[0] * 1000:.0f} ms/{p[1]} series/{p[2] // 1024} KiB" for p in parts)
          + ")" + ("" if math.isnan(together) else f", {together * 1000:.1f} ms all at once")
          + "; longest query text "
          f"{max(len(q) for q in texts) // 1024} KiB")
    return sum(p[0] for p in parts), together


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.monitor_scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollouts", type=int, default=1000, help="rollouts under watch")
    parser.add_argument("--failing", type=int, default=0,
                        help="of them, canaries failing their last allowed check")
    parser.add_argument("--interval", type=float, default=5.0, help="analysis interval (s)")
    parser.add_argument("--failure-threshold", type=int, default=3)
    args = parser.parse_args(argv)
    if args.rollouts < 1 or not 0 <= args.failing <= args.rollouts:
        parser.error("need --rollouts >= 1 and 0 <= --failing <= --rollouts")

    services = [f"svc-{i:04d}" for i in range(args.rollouts)]
    failing = set(services[:args.failing])
    window = max(args.interval, 5 * SCRAPE_S)
    with tempfile.TemporaryDirectory(prefix="meshbot-bench-") as name:
        tmp = Path(name)
        policy_path = write_policy(tmp / "policy.yaml", services, interval_s=args.interval,
                                   failure_threshold=args.failure_threshold)
        mesh = StaticMesh(services, NAMESPACE, failing=failing)
        with (base_stack(tmp, policy_path, sample_mesh=False) as stack,
              StaticMetricsServer(mesh) as metrics,
              PrometheusServer(tmp / "prometheus", [metrics.target],
                               scrape_interval=SCRAPE_S) as prometheus):
            seed_services(stack.cluster, sorted(failing), workloads=False)
            seed(stack, services, failing, args.interval, args.failure_threshold)
            prometheus.wait_for_targets()
            render = time.perf_counter()
            size = len(mesh.exposition())
            render = time.perf_counter() - render
            wait_for_rates(prometheus.url, 2 * len(services), window)
            os.environ.update(stack.env | {"PROMETHEUS_URL": prometheus.url})
            settings = Settings()
            pool = redis.ConnectionPool.from_url(stack.redis_url,
                                                 connection_class=CountingConnection)
            ctx = JobContext(settings, load_policy_file(policy_path),
                             redis.Redis(connection_pool=pool))
            # Built before the tick, as a running worker has them; timed by the bench.
            ctx.__dict__["notifier"] = TimedNotifier.from_settings(settings)
            kube_client = KubeClient.from_environment(settings=settings)
            ctx.__dict__["kube"] = TimedProxy(kube_client, KUBE_IO)
            policy = ctx.policy.defaults.slo.burn_rate.windows
            source = RecordingSource(prometheus.url, scrape_interval=SCRAPE_S,
                                     burn_windows=tuple(policy))
            with source:
                print(f"monitor scale: one analysis tick over {len(services)} fixed canaries "
                      f"({len(failing)} failing), interval {args.interval:g} s; Prometheus "
                      f"scrapes {mesh.series} series ({size // 1024} KiB, rendered in "
                      f"{render * 1000:.0f} ms) every {SCRAPE_S:g} s")
                now = time.time()
                _, first = run_tick(ctx, source, stack, now,
                                    "tick 1 (every check due, fresh worker, baselines taken)")
                floor = floors(prometheus.url, source.recorded, at_once=False)
                _, second = run_tick(ctx, source, stack, now + args.interval,
                                     "tick 2 (one interval later, warm connections, compared)")
                floor_2 = floors(prometheus.url, source.recorded)
                for label, wall, (apart, together) in (("tick 1", first, floor),
                                                       ("tick 2", second, floor_2)):
                    ratio = wall / apart if apart > 0 else math.nan
                    print(f"{label} / its queries over plain HTTP: {ratio:.2f}x one after the "
                          f"other (aim <= {AIM_RATIO:g}x: "
                          f"{'met' if ratio <= AIM_RATIO else 'NOT met'}), "
                          + ("" if math.isnan(together) else
                             f"{wall / together:.2f}x all at once"))
            updates = len(stack.slack.calls("chat.update"))
            left = Counter(r.phase.value for s in services
                           if (r := RolloutStore(stack.redis).get(s)) is not None)
            ctx.redis.close()
            kube_client.close()
    per_min = len(services) * 60 / args.interval
    verdict = (f"{per_min / SLACK_TIER3_PER_MIN:.0f}x over it" if per_min > SLACK_TIER3_PER_MIN
               else "within it")
    print(f"chat.update: {updates} over both ticks; if every check changes each status message, "
          f"{len(services)} rollouts at {args.interval:g} s make {per_min:.0f}/min against "
          f"Slack's Tier 3 (~{SLACK_TIER3_PER_MIN}/min per workspace): {verdict}")
    print(f"rollouts after the ticks: {dict(sorted(left.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
