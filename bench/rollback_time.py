"""How fast a broken canary is rolled back, beside the floor measured in the same run.

    python -m bench.rollback_time [--runs 5] [--interval 2] [--failure-threshold 2] [--healthy 10]

The stack of tests/fixtures/live.py: a private Redis, the Kubernetes emulator seeded with the
sample mesh (plus one service per run), the mesh traffic generator splitting by the live
VirtualService weights, a real Prometheus scraping it every second, the Slack stand-in and a
real ``meshbot worker`` (MESHBOT_SCRAPE_INTERVAL=1, MESHBOT_TICK_PERIOD=0.5) under a policy
written for the run. Commands go through the bot's gate and ``jobs.api.submit``, as the bot
hands them over.

Each run starts ``/mesh canary <svc> <weight>`` on a fresh service, waits until the weight is
applied and a healthy check passed, then makes the canary subset answer 503 to a share of its
requests and times, from that instant:
- errors visible: the success-rate query meshbot runs (same window) first says the canary is
  below the SLO — the scrape, and Istio's late creation of the 503 series, are in here;
- the first failed check and the rollback decision, from the rollout's history in Redis;
- weights back: the VirtualService in the emulator at stable 100 / canary 0.
The measured floor is "errors visible + (failure_threshold - 1) x interval": the earliest any
analyser checking every interval could have seen failure_threshold failed checks in a row. The
bound DESIGN aims at is (failure_threshold + 1) x interval + one scrape.

Then ``--healthy`` rollouts (steps 10, 25, 50: three checks each) run at once on healthy
canaries; the aim is that none is rolled back.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubernetes import config
from kubernetes.client import CustomObjectsApi

from bench._stack import (
    CHANNEL,
    OPERATOR,
    SUCCESS_RATE,
    Stack,
    base_stack,
    seed_services,
    summary,
    vs_weights,
    write_policy,
)
from bot.gate import gate
from bot.groups import UserGroups
from jobs.adapters.prometheus import MetricsSource
from jobs.adapters.rollout_store import RolloutStore
from jobs.domain.promql import parse_vector, rate_window, success_rate_query
from jobs.domain.rollout import Event, Phase, Rollout
from jobs.runtime.api import submit
from meshbot.commands import Request
from meshbot.errors import MetricsUnavailable
from playground.mesh_weights import VirtualServiceWeights
from playground.processes import MeshbotProcess
from playground.prometheus_server import PrometheusServer
from playground.sample_mesh import NAMESPACE, VERSIONS
from playground.traffic import TrafficGenerator
from policies.loader import load_policy_file
from policies.policy import Policy

SCRAPE_S = 1.0
TICK_S = 0.5
POLL_S = 0.05  # resolution of every time measured here
HEALTHY_STEPS = (10, 25, 50)


@dataclass(frozen=True)
class Run:
    service: str
    visible_s: float | None  # injection → the success-rate query shows the errors
    first_failed_s: float | None  # injection → the first failed check (worker's clock)
    decided_s: float | None  # injection → the check that rolled back
    rollback_s: float | None  # injection → VirtualService at 100/0 (None: not within timeout)
    reported: bool = False  # the rollback is in the rollout's Slack thread

    def floor_s(self, interval: float, threshold: int) -> float | None:
        return None if self.visible_s is None else self.visible_s + (threshold - 1) * interval


class Bench:
    def __init__(self, stack: Stack, policy: Policy, traffic: TrafficGenerator,
                 prometheus: PrometheusServer, args: argparse.Namespace) -> None:
        self.stack, self.policy, self.traffic, self.args = stack, policy, traffic, args
        self.store = RolloutStore(stack.redis)
        self.source = MetricsSource(prometheus.url, scrape_interval=SCRAPE_S)

    def command(self, text: str) -> None:
        """What the bot does with a slash command: the gate decides, then submit."""
        outcome = gate(self.policy, text, user=OPERATOR, channel=CHANNEL,
                       user_groups=UserGroups())
        if not outcome.submit or outcome.command is None or outcome.approvals_required:
            raise RuntimeError(f"the gate did not let `/mesh {text}` through: {outcome.reply}")
        request = Request(id=f"bench-{uuid.uuid4().hex}", command=outcome.command, user=OPERATOR,
                          channel=CHANNEL, received_at=time.time())
        submit(self.stack.redis, request)

    def wait(self, what: str, timeout: float, probe: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout
        while not probe():
            if time.monotonic() > deadline:
                raise TimeoutError(f"within {timeout:g}s: {what}")
            time.sleep(POLL_S)  # polling a condition, bounded by the deadline

    def errors_visible(self, service: str) -> bool:
        """Whether meshbot's own success-rate query (its window) shows the canary below SLO."""
        window = rate_window(self.args.interval, SCRAPE_S)
        try:
            answer = parse_vector(self.source.query(
                success_rate_query([(service, NAMESPACE)], window)))
        except MetricsUnavailable:
            return False
        value = answer.get((service, NAMESPACE, VERSIONS["canary"]))
        return value is not None and value < SUCCESS_RATE

    def fault_run(self, service: str) -> Run:
        weight = self.args.weight
        self.command(f"canary {service} {weight}")

        def healthy_check_passed() -> bool:
            rollout = self.store.get(service)
            return (rollout is not None and rollout.passed_checks >= 1
                    and vs_weights(self.stack.cluster, service)
                    == {"stable": 100 - weight, "canary": weight})

        self.wait(f"{service}: canary applied and one healthy check passed", 60,
                  healthy_check_passed)
        injected = time.time()
        self.traffic.set_profile(service, subset="canary", namespace=NAMESPACE,
                                 error_rate=self.args.error_rate)
        visible = rolled = None
        deadline = injected + self.args.run_timeout
        while time.time() < deadline:
            if visible is None and self.errors_visible(service):
                visible = time.time() - injected
            if vs_weights(self.stack.cluster, service) == {"stable": 100, "canary": 0}:
                rolled = time.time() - injected
                break
            time.sleep(POLL_S)  # polling both conditions, bounded by the deadline
        self.traffic.set_profile(service, subset="canary", namespace=NAMESPACE, error_rate=0.0)
        failed = _failed_checks(self.store.get(service), injected)
        return Run(service, visible, failed[0] if failed else None,
                   failed[-1] if rolled is not None and failed else None, rolled)

    def healthy_runs(self, services: Sequence[str]) -> dict[str, Rollout | None]:
        steps = ",".join(str(s) for s in HEALTHY_STEPS)
        for service in services:
            self.command(f"rollout {service} steps={steps}")

        def finished() -> bool:
            return all((r := self.store.get(s)) is not None
                       and (r.phase.terminal or r.phase is Phase.READY_TO_PROMOTE)
                       for s in services)

        # Three checks plus a few held for lack of data while the first weight reaches Prometheus.
        timeout = (len(HEALTHY_STEPS) + 6) * self.args.interval + 20
        # A timeout shows as "other" below: the figure is what happened, not an exception.
        with contextlib.suppress(TimeoutError):
            self.wait("every healthy rollout ends", timeout, finished)
        return {s: self.store.get(s) for s in services}

    def reported(self, service: str) -> bool:
        """Whether the automatic rollback reached the rollout's thread (it is posted after the
        weights change, so it may still be on its way)."""
        rollout = self.store.get(service)
        if rollout is None or rollout.thread_ts is None:
            return False
        ts = rollout.thread_ts

        def in_thread() -> bool:
            return any("Automatic rollback" in m.text
                       for m in self.stack.slack.thread(CHANNEL, ts))

        try:
            self.wait(f"{service}: rollback in the thread", 5, in_thread)
        except TimeoutError:
            return False
        return True


def _failed_checks(rollout: Rollout | None, since: float) -> list[float]:
    if rollout is None:
        return []
    return [t.at - since for t in rollout.history
            if t.event is Event.CHECK_FAILED and t.at >= since]


def _s(value: float | None) -> str:
    return "    —  " if value is None else f"{value:5.2f} s"


def report(args: argparse.Namespace, runs: list[Run],
           healthy: dict[str, Rollout | None]) -> None:
    interval, threshold = args.interval, args.failure_threshold
    bound = (threshold + 1) * interval + SCRAPE_S
    print(f"rollback time: meshbot worker (tick {TICK_S:g} s), Prometheus scrape {SCRAPE_S:g} s, "
          f"interval {interval:g} s, failure_threshold {threshold}; canary {args.weight}% "
          f"answering 503 to {args.error_rate:.0%} after one healthy check")
    for i, run in enumerate(runs, 1):
        print(f"  run {i}  {run.service:<14} errors visible {_s(run.visible_s)}  "
              f"1st failed check {_s(run.first_failed_s)}  rollback decided "
              f"{_s(run.decided_s)}  weights 100/0 {_s(run.rollback_s)}  "
              f"floor {_s(run.floor_s(interval, threshold))}  "
              f"in thread: {'yes' if run.reported else 'no'}")
    times = [r.rollback_s for r in runs if r.rollback_s is not None]
    floors = [f for r in runs if (f := r.floor_s(interval, threshold)) is not None]
    missed = len(runs) - len(times)
    print(f"rollback (injection -> VirtualService 100/0): "
          f"{summary(times) if times else 'none'} over {len(times)}/{len(runs)} runs"
          f"{f'  <-- {missed} NOT rolled back within {args.run_timeout:g} s' if missed else ''}")
    print(f"measured floor (errors visible in Prometheus + {threshold - 1} x interval): "
          f"{summary(floors) if floors else 'none'}")
    over = [t - f for r in runs if r.rollback_s is not None
            and (f := r.floor_s(interval, threshold)) is not None for t in [r.rollback_s]]
    if over:
        print(f"rollback minus floor: {summary(over)}")
    within = sum(1 for t in times if t <= bound)
    print(f"aim (failure_threshold + 1) x interval + one scrape = {bound:.2f} s: "
          f"{'met' if within == len(runs) else 'NOT met'} ({within}/{len(runs)} runs within)")
    phases = [r.phase if r is not None else None for r in healthy.values()]
    ready = sum(1 for p in phases if p is Phase.READY_TO_PROMOTE)
    rolled = sum(1 for p in phases if p is Phase.ROLLED_BACK)
    failed = sum(1 for r in healthy.values() if r is not None
                 for t in r.history if t.event is Event.CHECK_FAILED)
    print(f"healthy rollouts (steps {', '.join(map(str, HEALTHY_STEPS))}, at once): "
          f"{len(healthy)} run, {ready} ready to promote, {rolled} rolled back (aim 0), "
          f"{len(healthy) - ready - rolled} other; {failed} failed checks")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rollback_time", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed rollbacks (one service each)")
    parser.add_argument("--interval", type=float, default=2.0, help="analysis interval (s)")
    parser.add_argument("--failure-threshold", type=int, default=2,
                        help="failed checks in a row that roll back")
    parser.add_argument("--healthy", type=int, default=10, help="healthy rollouts (aim: none "
                        "rolled back)")
    parser.add_argument("--weight", type=int, default=50, help="canary weight (%%)")
    parser.add_argument("--error-rate", type=float, default=0.5,
                        help="share of the canary's requests answered 503 after injection")
    parser.add_argument("--run-timeout", type=float, default=None,
                        help="give up on one rollback after this long (s; default 3 x the aim)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.healthy < 0 or args.failure_threshold < 1 or args.interval <= 0:
        parser.error("need --runs >= 1, --healthy >= 0, --failure-threshold >= 1, --interval > 0")
    if args.run_timeout is None:
        args.run_timeout = 3 * ((args.failure_threshold + 1) * args.interval + SCRAPE_S)

    faulty = [f"rbt-fault-{i:02d}" for i in range(args.runs)]
    healthy = [f"rbt-ok-{i:02d}" for i in range(args.healthy)]
    with tempfile.TemporaryDirectory(prefix="meshbot-bench-") as name:
        tmp = Path(name)
        policy_path = write_policy(tmp / "policy.yaml", faulty + healthy,
                                   interval_s=args.interval,
                                   failure_threshold=args.failure_threshold)
        with base_stack(tmp, policy_path) as stack:
            seed_services(stack.cluster, faulty + healthy)
            api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=stack.env["KUBECONFIG"])
            weights = VirtualServiceWeights(CustomObjectsApi(api), [NAMESPACE])
            with (api,
                  TrafficGenerator(weights, poll_interval=0.2) as traffic,
                  PrometheusServer(tmp / "prometheus", [traffic.target],
                                   scrape_interval=SCRAPE_S) as prometheus):
                env = {**stack.env, "PROMETHEUS_URL": prometheus.url,
                       "MESHBOT_SCRAPE_INTERVAL": f"{SCRAPE_S:g}",
                       "MESHBOT_TICK_PERIOD": f"{TICK_S:g}"}
                # The worker starts while Prometheus makes its first scrapes.
                worker = MeshbotProcess(["worker"], env, tmp / "worker.log").start()
                bench = Bench(stack, load_policy_file(policy_path), traffic, prometheus, args)
                try:
                    prometheus.wait_for_targets()
                    runs = [bench.fault_run(service) for service in faulty]
                    outcome = bench.healthy_runs(healthy)
                    runs = [Run(r.service, r.visible_s, r.first_failed_s, r.decided_s,
                                r.rollback_s, bench.reported(r.service)) for r in runs]
                except BaseException:
                    print(worker.log()[-4000:], file=sys.stderr)
                    raise
                finally:
                    worker.stop()
                    bench.source.close()
    report(args, runs, outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
