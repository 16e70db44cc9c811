"""Sequential canary-vs-stable test beside today's threshold rule, on synthetic traffic, then
end to end with the real stack.

    python -m bench.detection [--seed 1] [--runs 1000] [--e2e-runs 3] [--e2e-interval 5]
                              [--chart PATH]

Pure and seeded: no Prometheus, no cluster. Each simulated rollout is one step at a fixed weight,
watched for 30 minutes at a 1 s scrape: 100 req/s, 10 % of it to the canary; every second each
subset gets Poisson numbers of requests in six independent classes (error or not x latency up to
50 ms, 50-100 ms, above 100 ms — independent marks of a Poisson stream, so given its requests a
subset's errors are binomial). Latency is log-normal, the stable's p99 80 ms.

- sequential (``jobs.domain.sequential``): the error-rate test and the latency test (bounds 50
  and 100 ms) on the counts since the step began, at every scrape, alpha 0.01 split evenly
  between them, tolerance 10 %, floor 0.1 percentage points. It rolls back when either is
  conclusive.
- threshold rule (today's): a check every 5 s over the last 5 s of the canary; failed when its
  success rate is below 99.9 % or its p99 above 100 ms, NO_DATA below 1 req/s; rolled back at
  the third failed check in a row. p99 > 100 ms is read as "more than 1 % of the window's
  requests above 100 ms", which is what histogram_quantile says when 100 ms is a bucket bound
  and another bound lies above it (Istio's 250 ms).

Detection times are seconds from the first scrape that shows the regression (present from the
step's start, first scraped at 1 s). The service-wide incident has the stable as bad as the
canary (5 % errors): a comparison must not blame the canary; the threshold rule does.

End to end (``--e2e-runs``, 0 to skip): the stack of bench/rollback_time.py (Redis, the
Kubernetes emulator, the traffic generator at 100 req/s per service splitting by the live
VirtualService weights, a real Prometheus scraping every second, the Slack stand-in, a real
``meshbot worker`` ticking every 0.5 s). The stable answers 0.1 % of its requests with 503, the
canary 20 %, from the step's start: ``/mesh canary <svc> 10`` with interval 5 s
(``--e2e-interval``) and failure_threshold 3, on services with ``analysis.sequential`` true
(meshbot now) and false (the threshold rule alone, as before). Timed from the first scrape
that shows a canary 5xx (its sample's timestamp in Prometheus) to the VirtualService at stable
100 / canary 0. ``--chart`` keeps the PNG the last sequential rollback posted in its thread.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from jobs.domain.sequential import (
    Counts,
    compare,
    latency_test,
    log_e_relative,
    service_wide,
)

DURATION_S = 1800
TOTAL_RPS = 100.0
CANARY_SHARE = 0.1
STABLE_ERRORS = 0.001
STABLE_MEDIAN_MS = 20.0
SIGMA = math.log(80.0 / STABLE_MEDIAN_MS) / 2.3263478740408408  # stable p99 = 80 ms
BOUNDS_MS = (50.0, 100.0)
ALPHA, TOLERANCE, FLOOR = 0.01, 0.1, 0.001
INTERVAL_S, FAILURE_THRESHOLD, MIN_REQUEST_RATE = 5, 3, 1.0
SLO_SUCCESS, SLO_P99_MS = 99.9, 100.0


@dataclass(frozen=True)
class Scenario:
    name: str
    canary_errors: float
    stable_errors: float = STABLE_ERRORS
    canary_slowdown: float = 1.0  # latency multiplier (1.5: p99 +50 %)
    share_of_runs: float = 1.0


SCENARIOS = (
    Scenario("healthy (0.1 % errors, p99 80 ms, both)", STABLE_ERRORS),
    Scenario("severe: canary 20 % errors", 0.2),
    Scenario("mild: canary 1 % errors", 0.01),
    Scenario("latency: canary p99 +50 % (120 ms)", STABLE_ERRORS, canary_slowdown=1.5),
    Scenario("service-wide: both 5 % errors", 0.05, stable_errors=0.05, share_of_runs=0.25),
)


def _above(bound_ms: float, median_ms: float) -> float:
    return 0.5 * math.erfc((math.log(bound_ms / median_ms) / SIGMA) / math.sqrt(2))


class Stream:
    """One subset's per-second counts: requests, errors, above 50 ms, above 100 ms."""

    def __init__(self, rps: float, errors: float, median_ms: float) -> None:
        p50, p100 = _above(BOUNDS_MS[0], median_ms), _above(BOUNDS_MS[1], median_ms)
        shares = (1 - p50, p50 - p100, p100)  # latency bins: <=50, 50-100, >100
        self.means = [rps * share * (e if bad else 1 - e)
                      for share in shares for bad, e in ((False, errors), (True, errors))]
        self.limits = [math.exp(-m) for m in self.means]

    def second(self, rng: random.Random) -> tuple[int, int, int, int]:
        k = []
        for mean, limit in zip(self.means, self.limits, strict=True):
            if mean >= 30:  # normal approximation for the bulk
                k.append(max(0, round(rng.gauss(mean, math.sqrt(mean)))))
                continue
            n, p = 0, rng.random()  # Poisson by multiplying uniforms
            while p > limit:
                n += 1
                p *= rng.random()
            k.append(n)
        return sum(k), k[1] + k[3] + k[5], k[2] + k[3] + k[4] + k[5], k[4] + k[5]


@dataclass
class Outcome:
    sequential: int | None = None  # second of the scrape that rolled back
    threshold: int | None = None
    cause: str = ""  # what the threshold rule's last failed check failed on
    wide: tuple[bool, bool] = (False, False)  # service_wide(): errors, latency, at that moment


def _buckets(total: float, above50: float, above100: float) -> list[tuple[float, float]]:
    return [(50.0, total - above50), (100.0, total - above100), (math.inf, total)]


def simulate(scenario: Scenario, rng: random.Random) -> Outcome:
    canary = Stream(TOTAL_RPS * CANARY_SHARE, scenario.canary_errors,
                    STABLE_MEDIAN_MS * scenario.canary_slowdown)
    stable = Stream(TOTAL_RPS * (1 - CANARY_SHARE), scenario.stable_errors, STABLE_MEDIAN_MS)
    log_threshold = math.log(2 / ALPHA)  # each test at alpha / 2
    c = [0, 0, 0, 0]  # cumulative since the step began: requests, errors, >50 ms, >100 ms
    s = [0, 0, 0, 0]
    window = [0, 0, 0, 0]
    failed = 0
    out = Outcome()
    for t in range(1, DURATION_S + 1):
        dc, ds = canary.second(rng), stable.second(rng)
        c = [a + b for a, b in zip(c, dc, strict=True)]
        s = [a + b for a, b in zip(s, ds, strict=True)]
        window = [a + b for a, b in zip(window, dc, strict=True)]
        if out.sequential is None and _sequential(c, s, log_threshold):
            out.sequential = t
        if out.threshold is None and t % INTERVAL_S == 0:
            failed, cause = _threshold_check(window, failed)
            window = [0, 0, 0, 0]
            if failed >= FAILURE_THRESHOLD:
                out.threshold, out.cause = t, cause
                wide = service_wide(Counts(c[0], c[1]), Counts(s[0], s[1]),
                                    _buckets(c[0], c[2], c[3]), _buckets(s[0], s[2], s[3]),
                                    success_rate=SLO_SUCCESS, latency_bound_ms=SLO_P99_MS)
                out.wide = (wide.errors, wide.latency)
        if out.sequential is not None and out.threshold is not None:
            break
    return out


def _sequential(c: Sequence[int], s: Sequence[int], log_threshold: float) -> bool:
    """Either test conclusive. The closed-form relative parts bound the e-values from above, so
    the full tests run only when those reach the threshold: the same answer, much sooner."""
    errors_c, errors_s = Counts(c[0], c[1]), Counts(s[0], s[1])
    if log_e_relative(errors_c, errors_s, TOLERANCE) >= log_threshold and compare(
            errors_c, errors_s, alpha=ALPHA / 2, tolerance=TOLERANCE, floor=FLOOR).conclusive:
        return True
    rel = [log_e_relative(Counts(c[0], c[i]), Counts(s[0], s[i]), TOLERANCE) for i in (2, 3)]
    top = max(rel)
    if top + math.log(sum(math.exp(r - top) for r in rel) / len(rel)) < log_threshold:
        return False
    return latency_test(_buckets(c[0], c[2], c[3]), _buckets(s[0], s[2], s[3]), BOUNDS_MS,
                        alpha=ALPHA / 2, tolerance=TOLERANCE, floor=FLOOR).conclusive


def _threshold_check(window: Sequence[int], failed: int) -> tuple[int, str]:
    """(failed checks in a row, what this check failed on)."""
    requests, errors, _, above100 = window
    if requests / INTERVAL_S < MIN_REQUEST_RATE or requests == 0:
        return failed, ""  # NO_DATA: holds, neither a pass nor a failure
    causes = [name for name, bad in (
        ("success rate", 100 * (1 - errors / requests) < SLO_SUCCESS),
        ("p99", above100 > 0.01 * requests)) if bad]
    return (failed + 1, " and ".join(causes)) if causes else (0, "")


def _percentile(values: Sequence[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _describe(times: Sequence[int | None], runs: int) -> str:
    hit = [t - 1 for t in times if t is not None]  # from the first scrape, at 1 s
    text = f"{len(hit):5d}/{runs} = {100 * len(hit) / runs:5.1f}%"
    if hit:
        text += (f"  median {_percentile(hit, 0.5)} s, p90 {_percentile(hit, 0.9)} s,"
                 f" p99 {_percentile(hit, 0.99)} s")
    return text


E2E_INTERVAL_S, E2E_THRESHOLD, E2E_WEIGHT, E2E_RPS = 5.0, 3, 10, 100.0
E2E_CANARY_ERRORS, E2E_STABLE_ERRORS = 0.2, 0.001


def end_to_end(runs: int, chart: str | None, interval_s: float = E2E_INTERVAL_S) -> None:
    """Severe regressions against the real Prometheus and worker: sequential vs threshold."""
    import json
    import statistics
    import tempfile
    import urllib.parse
    import urllib.request
    import uuid
    from pathlib import Path

    from kubernetes import config
    from kubernetes.client import CustomObjectsApi

    from bench._stack import (
        CHANNEL,
        OPERATOR,
        base_stack,
        seed_services,
        vs_weights,
        write_policy,
    )
    from bot.gate import gate
    from bot.groups import UserGroups
    from jobs.adapters.rollout_store import RolloutStore
    from jobs.domain.rollout import Event, Phase
    from jobs.runtime.api import submit
    from meshbot.commands import Request
    from playground.mesh_weights import VirtualServiceWeights
    from playground.processes import MeshbotProcess
    from playground.prometheus_server import PrometheusServer
    from playground.sample_mesh import NAMESPACE, VERSIONS
    from playground.traffic import TrafficGenerator
    from policies.loader import load_policy_file

    modes = {"sequential": [f"det-seq-{i:02d}" for i in range(runs)],
             "threshold rule": [f"det-thr-{i:02d}" for i in range(runs)]}
    with tempfile.TemporaryDirectory(prefix="meshbot-bench-") as name:
        tmp = Path(name)
        services = [s for group in modes.values() for s in group]
        path = write_policy(tmp / "policy.yaml", services, interval_s=interval_s,
                            failure_threshold=E2E_THRESHOLD, burn_windows=("5m", "1h"))
        policy_doc = json.loads(path.read_text())
        for service in modes["threshold rule"]:
            policy_doc["services"][service]["analysis"] = {"sequential": False}
        path.write_text(json.dumps(policy_doc, indent=1))
        policy = load_policy_file(path)
        with base_stack(tmp, path) as stack:
            seed_services(stack.cluster, services)
            api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=stack.env["KUBECONFIG"])
            weights = VirtualServiceWeights(CustomObjectsApi(api), [NAMESPACE])
            with (api, TrafficGenerator(weights, poll_interval=0.2, default_rps=E2E_RPS) as traffic,
                  PrometheusServer(tmp / "prometheus", [traffic.target],
                                   scrape_interval=1.0) as prometheus):
                env = {**stack.env, "PROMETHEUS_URL": prometheus.url,
                       "MESHBOT_SCRAPE_INTERVAL": "1", "MESHBOT_TICK_PERIOD": "0.5"}
                # The worker starts while Prometheus makes its first scrapes.
                worker = MeshbotProcess(["worker"], env, tmp / "worker.log").start()
                store = RolloutStore(stack.redis)

                def first_5xx_scrape(service: str) -> float | None:
                    promql = (f'min(timestamp(istio_requests_total{{reporter="destination",'
                              f'destination_service_name="{service}",destination_version='
                              f'"{VERSIONS["canary"]}",response_code=~"5.*"}}))')
                    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode(
                        {"query": promql})
                    with urllib.request.urlopen(url, timeout=5) as answer:
                        result = json.load(answer)["data"]["result"]
                    return float(result[0]["value"][1]) if result else None

                results: dict[str, list[tuple[float, float, str]]] = {m: [] for m in modes}
                try:
                    prometheus.wait_for_targets()
                    for mode, group in modes.items():
                        for service in group:
                            for subset, rate in (("stable", E2E_STABLE_ERRORS),
                                                 ("canary", E2E_CANARY_ERRORS)):
                                traffic.set_profile(service, subset=subset, namespace=NAMESPACE,
                                                    error_rate=rate)
                            outcome = gate(policy, f"canary {service} {E2E_WEIGHT}",
                                           user=OPERATOR, channel=CHANNEL,
                                           user_groups=UserGroups())
                            assert outcome.command is not None, outcome.reply
                            submit(stack.redis, Request(
                                id=f"bench-{uuid.uuid4().hex}", command=outcome.command,
                                user=OPERATOR, channel=CHANNEL, received_at=time.time()))
                            seen: float | None = None
                            deadline = time.time() + 6 * interval_s * E2E_THRESHOLD
                            while time.time() < deadline:
                                seen = seen or first_5xx_scrape(service)
                                current = store.get(service)
                                if current is not None and current.phase is Phase.ROLLED_BACK \
                                        and vs_weights(stack.cluster, service) == \
                                        {"stable": 100, "canary": 0}:
                                    break
                                time.sleep(0.05)  # polling, bounded by the deadline
                            rolled = time.time()
                            rollout = store.get(service)
                            if seen is None or rollout is None \
                                    or rollout.phase is not Phase.ROLLED_BACK:
                                print(f"  {mode} {service}: not rolled back in time")
                                continue
                            event = rollout.history[-1]
                            cause = "comparison" if event.event is Event.REGRESSION else \
                                f"{rollout.failed_checks} failed checks"
                            results[mode].append((rolled - seen, event.at - seen, cause))
                finally:
                    worker.stop()
                if chart:
                    pngs = [f.content for f in stack.slack.files() if f.content
                            and f.filename.startswith("det-seq")]
                    if pngs:
                        Path(chart).write_bytes(pngs[-1])
                        print(f"chart of the last sequential rollback: {chart}")
    print(f"\nend to end ({runs} runs each): canary {E2E_WEIGHT} % of {E2E_RPS:g} req/s, "
          f"{100 * E2E_CANARY_ERRORS:g} % errors vs stable {100 * E2E_STABLE_ERRORS:g} %, "
          f"from the step's start; interval {interval_s:g} s, failure_threshold "
          f"{E2E_THRESHOLD}, scrape 1 s, tick 0.5 s")
    print("  first scrape showing a canary 5xx -> decision / -> VirtualService 100/0")
    for mode, rows in results.items():
        if not rows:
            print(f"  {mode:<15} no rollback")
            continue
        weights_back = [r[0] for r in rows]
        decided = [r[1] for r in rows]
        causes = {c: sum(r[2] == c for r in rows) for c in sorted({r[2] for r in rows})}
        print(f"  {mode:<15} decision median {statistics.median(decided):5.2f} s; weights "
              f"median {statistics.median(weights_back):5.2f} s, min {min(weights_back):5.2f}"
              f" s, max {max(weights_back):5.2f} s over {len(rows)}/{runs}; by "
              + ", ".join(f"{k} {v}" for k, v in causes.items()))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--e2e-runs", type=int, default=3,
                        help="end-to-end rollbacks per rule against the real stack (0: none)")
    parser.add_argument("--e2e-interval", type=float, default=E2E_INTERVAL_S,
                        help="the end-to-end rollouts' analysis interval (s)")
    parser.add_argument("--chart", default=None,
                        help="write the last sequential rollback's chart (PNG) here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(f"seed {args.seed}; {args.runs} rollouts per scenario (service-wide: a quarter), "
          f"each watched {DURATION_S // 60} min at a 1 s scrape; {TOTAL_RPS:g} req/s, "
          f"{100 * CANARY_SHARE:g} % to the canary")
    print(f"sequential: alpha {ALPHA:g} (half errors, half latency), tolerance "
          f"{100 * TOLERANCE:g} %, floor {100 * FLOOR:g} pt, latency bounds "
          f"{', '.join(f'{b:g}' for b in BOUNDS_MS)} ms, judged at every scrape")
    print(f"threshold rule: {FAILURE_THRESHOLD} failed checks in a row, every {INTERVAL_S} s over "
          f"{INTERVAL_S} s, SLO {SLO_SUCCESS:g} % and p99 <= {SLO_P99_MS:g} ms, "
          f"min {MIN_REQUEST_RATE:g} req/s")
    for index, scenario in enumerate(SCENARIOS):
        rng = random.Random(args.seed * 1000 + index)
        runs = max(1, round(args.runs * scenario.share_of_runs))
        outcomes = [simulate(scenario, rng) for _ in range(runs)]
        print(f"\n{scenario.name}: rolled back within {DURATION_S // 60} min")
        print(f"  sequential     {_describe([o.sequential for o in outcomes], runs)}")
        print(f"  threshold rule {_describe([o.threshold for o in outcomes], runs)}")
        rolled = [o for o in outcomes if o.threshold is not None]
        if rolled:
            causes = {cause: sum(o.cause == cause for o in rolled) for cause in
                      sorted({o.cause for o in rolled})}
            print("    its last failed check: " + ", ".join(f"{k} {v}" for k, v in causes.items()))
            errors, latency = (sum(o.wide[i] for o in rolled) for i in (0, 1))
            print(f"    service_wide() then: the stable breaks the SLO as badly on errors at "
                  f"{errors}, on p99 at {latency} of them")
    print(f"\n{time.perf_counter() - started:.1f} s")
    if args.e2e_runs > 0:
        end_to_end(args.e2e_runs, args.chart, args.e2e_interval)


if __name__ == "__main__":
    main()
