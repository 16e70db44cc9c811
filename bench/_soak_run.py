"""One soak scenario: the stack up, commands and faults for ``duration`` seconds, then quiet,
then the invariants (``bench._soak_check``). Returns its figures; prints nothing."""

from __future__ import annotations

import random
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
from rq import Queue
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from bench import _soak_check as check
from bench._soak_faults import Faults
from bench._soak_load import Load
from bench._soak_stack import SoakStack, children, rss_mb, soak_stack
from jobs.adapters.keys import Keys
from jobs.domain.rollout import Rollout

QUEUES = ("meshbot-urgent", "meshbot")
POLL_S = 0.05


@dataclass
class Plan:
    seed: int
    duration: float
    commands: int
    faults: int
    workers: int
    extra_services: int
    kinds: Sequence[str]
    quiet_deadline: float


@dataclass
class Result:
    plan: Plan
    violations: check.Violations
    sent: int = 0
    acked: int = 0
    ends: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    phases: Counter[str] = field(default_factory=Counter)
    rollouts_seen: int = 0
    judgements: int = 0
    automatic: int = 0
    reactions: int = 0
    elapsed: float = 0.0  # first command → quiet
    quiet_after: float = 0.0  # end of the load → quiet
    rss: dict[str, float] = field(default_factory=dict)
    logs_dir: str = ""
    load_window: tuple[float, float] = (0.0, 0.0)  # wall clock: first command, end of the load
    ended_in_load: int = 0  # accepted commands that ended within the load window
    redis_losses: int = 0  # RQ's worker loop losing Redis (one warning line each)
    routes_checked: int = 0  # services whose routes a last rollback decided

    @property
    def carried_out(self) -> int:
        return sum(n for end, n in self.ends.items() if end in check.TERMINAL)


def _accepted_open(stack: SoakStack, load: Load) -> list[str]:
    """Accepted commands with no end in the audit yet."""
    done = {e.request_id for e in check.read_audit(stack.redis) if e.outcome in check.TERMINAL}
    return [s.text for s in load.sent if s.acked and s.retry_of is None
            and s.ack_kind == "accepted" and s.trigger_id not in done]


def busy(stack: SoakStack, load: Load) -> list[str]:
    """What is still going on (empty: quiet)."""
    client, found = stack.redis, []
    for name in QUEUES:
        queue = Queue(name, connection=client, serializer=JSONSerializer)
        if queue.count:
            found.append(f"{queue.count} queued on {name}")
        if (n := StartedJobRegistry(queue=queue).count):
            found.append(f"{n} started on {name}")
        scheduled = ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
        if (n := scheduled.count):
            found.append(f"{n} scheduled on {name}")
    if (n := client.zcard(Keys().unapplied)):
        found.append(f"{n} unapplied")
    if (left := _accepted_open(stack, load)):
        found.append(f"{len(left)} accepted commands not ended (e.g. `{left[0]}`)")
    return found


class Scenario:
    def __init__(self, stack: SoakStack, plan: Plan) -> None:
        self.stack, self.plan = stack, plan
        rng = random.Random(plan.seed)
        self.load = Load(stack, random.Random(rng.random()))
        self.faults = Faults(stack, random.Random(rng.random()), plan.kinds,
                             targets=self.load.recent_services)
        self.fault_rng = random.Random(rng.random())
        self.seen: dict[str, Rollout] = {}

    def snapshot(self) -> None:
        try:
            for rollout in check.read_rollouts(self.stack.redis, self.stack.names).values():
                self.seen[rollout.id] = rollout
        except redis.RedisError:
            pass  # Redis restarting: the next snapshot catches up

    def drive(self) -> None:
        plan, start = self.plan, time.monotonic()
        gap = plan.duration / max(1, plan.commands)
        mean_fault = plan.duration / max(1, plan.faults)
        next_cmd = start + gap / 2
        next_fault = start + self.fault_rng.expovariate(1 / mean_fault)
        forced_kill = start + plan.duration / 2 if "worker_kill" in plan.kinds else None
        next_react = next_snap = start
        end = start + plan.duration
        while (now := time.monotonic()) < end:
            self.faults.due()
            if now >= next_cmd and len(self.load.sent) < plan.commands:
                self.load.send_one()
                next_cmd += gap
            if now >= next_fault and sum(self.faults.struck.values()) < plan.faults:
                self.faults.strike()
                next_fault += self.fault_rng.expovariate(1 / mean_fault)
            if forced_kill is not None and now >= forced_kill:
                # One worker of the three killed and replaced along the way, whatever the draw.
                self.faults.kinds, kinds = ("worker_kill",), self.faults.kinds
                self.faults.strike()
                self.faults.kinds, forced_kill = kinds, None
            if now >= next_react:
                self.load.answer_approvals()
                next_react = now + 0.5
            if now >= next_snap:
                self.snapshot()
                next_snap = now + 1.0
            wake = min(next_cmd, next_fault, next_react, next_snap, end)
            time.sleep(max(0.0, min(wake - time.monotonic(), 0.5)))  # pacing the schedule
        self.faults.settle()

    def quiesce(self) -> list[str]:
        deadline = time.monotonic() + self.plan.quiet_deadline
        left: list[str] = ["not looked yet"]
        while time.monotonic() < deadline:
            self.load.answer_approvals()
            self.snapshot()
            try:
                left = busy(self.stack, self.load)
            except redis.RedisError as exc:
                left = [f"Redis: {exc}"]
            if not left:
                return []
            time.sleep(0.5)  # polling the condition, bounded by the deadline
        return left


def memory(stack: SoakStack) -> dict[str, float]:
    found: dict[str, float] = {}
    serve = stack.serve.process
    if serve is not None:
        found["serve (gunicorn master)"] = rss_mb(serve.pid) or 0.0
        for i, pid in enumerate(children(serve.pid), 1):
            found[f"serve worker {i}"] = rss_mb(pid) or 0.0
    for worker in stack.live:
        if worker.process is not None:
            found[f"worker pid {worker.process.pid}"] = rss_mb(worker.process.pid) or 0.0
    return found


def run(plan: Plan, keep_logs: Path | None = None) -> Result:
    violations = check.Violations()
    result = Result(plan, violations)
    with tempfile.TemporaryDirectory(prefix="meshbot-soak-") as name:
        tmp = Path(name)
        with soak_stack(tmp, plan.extra_services, plan.workers) as stack:
            scenario = Scenario(stack, plan)
            started, wall = time.monotonic(), time.time()
            try:
                scenario.drive()
                load_done = time.monotonic()
                result.load_window = (wall, time.time())
                left = scenario.quiesce()
                quiet = time.monotonic()
                if left:
                    violations.add("quiet", f"not quiet {plan.quiet_deadline:g} s after the "
                                   f"load: {'; '.join(left)}")
                collect(stack, scenario, result, violations)
            finally:
                scenario.load.close()
            result.elapsed, result.quiet_after = quiet - started, quiet - load_done
            result.rss = memory(stack)
        result.redis_losses = check.check_logs(violations, stack.logs())
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            for log_name, text in stack.logs().items():
                (keep_logs / f"{log_name}.log").write_text(text)
            result.logs_dir = str(keep_logs)
    return result


def collect(stack: SoakStack, scenario: Scenario, result: Result,
            violations: check.Violations) -> None:
    client, load = stack.redis, scenario.load
    audit = check.read_audit(client)
    told = {r.token for r in stack.slack.responses()}
    result.ends = check.check_commands(violations, load.sent, audit, told)
    accepted = {s.trigger_id for s in load.sent if s.acked and s.retry_of is None
                and s.ack_kind == "accepted"}
    first_end: dict[str, float] = {}
    for entry in audit:
        if entry.request_id in accepted and entry.outcome in check.TERMINAL:
            first_end.setdefault(entry.request_id, entry.at)
    result.ended_in_load = sum(1 for at in first_end.values() if at <= result.load_window[1])
    rollouts = check.read_rollouts(client, stack.names)
    live = {n: v.decode() for n in stack.names
            if isinstance(v := client.get(Keys().live_subset(n)), bytes)}
    weights = {n: stack.weights(n) for n in stack.names}
    check.check_weights(violations, stack.names, rollouts, weights, live)
    result.routes_checked = check.check_routes(violations, stack.names, load.sent, audit,
                                               {n: stack.routes(n) for n in stack.names})
    unapplied = [m.decode() if isinstance(m, bytes) else str(m)
                 for m in client.zrange(Keys().unapplied, 0, -1)]
    result.phases = check.check_rollouts(violations, rollouts, time.time(), unapplied)
    scenario.snapshot()
    result.judgements, result.automatic = check.check_history(violations, scenario.seen, audit)
    result.sent, result.acked = len(load.sent), sum(s.acked for s in load.sent)
    result.faults = Counter(scenario.faults.struck)
    result.rollouts_seen, result.reactions = len(scenario.seen), load.reactions
    for log_path in stack.dead_workers():
        violations.add("died", f"a worker exited by itself (nobody killed it): {log_path}")
