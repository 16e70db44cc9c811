"""The soak's fault schedule: seeded, struck one at a time from the driver's loop.

Kinds: a worker SIGKILLed (and its replacement started), Redis restarted (AOF keeps its data),
Kubernetes answering 409 / 5xx or stalling writes of VirtualServices, or answering 503 / 504 to
a write it committed (the answer lost), Slack answering 429 / 5xx, and Prometheus stopped
(started again a few seconds later).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench._soak_stack import SoakStack

KINDS: tuple[str, ...] = ("worker_kill", "redis_restart", "kube_409", "kube_5xx", "kube_stall",
                          "kube_lost_answer", "slack_429", "slack_5xx", "prometheus_stop")
SLACK_METHODS = ("chat.postMessage", "chat.update", "chat.getPermalink")
PROMETHEUS_DOWN_S = (3.0, 12.0)


@dataclass
class Faults:
    stack: SoakStack
    rng: random.Random
    kinds: Sequence[str] = KINDS
    struck: Counter[str] = field(default_factory=Counter)
    log: list[tuple[float, str, str]] = field(default_factory=list)  # (at, kind, detail)
    prometheus_back_at: float | None = None
    max_worker_kills: int | None = None  # None: any number
    # Where Kubernetes faults aim (a VirtualService meshbot is about to touch): without a name
    # they would be spent on the traffic generator's LIST as often as on meshbot.
    targets: Callable[[], Sequence[str]] = lambda: ()

    def due(self) -> None:
        """Start Prometheus again once its outage is over."""
        if self.prometheus_back_at is not None and time.monotonic() >= self.prometheus_back_at:
            self.stack.prometheus.start()
            self.prometheus_back_at = None

    def strike(self) -> str:
        """One fault, of a kind drawn from the seeded generator; its kind."""
        kinds = list(self.kinds)
        if self.prometheus_back_at is not None and "prometheus_stop" in kinds:
            kinds.remove("prometheus_stop")  # already down
        if self.max_worker_kills is not None and \
                self.struck["worker_kill"] >= self.max_worker_kills and "worker_kill" in kinds:
            kinds.remove("worker_kill")
        kind = self.rng.choice(kinds)
        detail = getattr(self, "_" + kind)()
        self.struck[kind] += 1
        self.log.append((time.time(), kind, detail))
        return kind

    def settle(self) -> None:
        """The end of the fault phase: Prometheus up, no fault left armed."""
        if self.prometheus_back_at is not None:
            self.stack.prometheus.start()
            self.prometheus_back_at = None

    # -- the kinds ---------------------------------------------------------------------------

    def _target(self) -> str | None:
        names = list(self.targets())
        return self.rng.choice(names) if names else None

    def _worker_kill(self) -> str:
        index = self.rng.randrange(len(self.stack.live))
        victim = self.stack.live[index]
        pid = victim.process.pid if victim.process is not None else 0
        replacement = self.stack.kill_worker(index)
        new = replacement.process.pid if replacement.process is not None else 0
        return f"killed pid {pid}, started pid {new}"

    def _redis_restart(self) -> str:
        self.stack.redis_server.restart()
        return f"port {self.stack.redis_server.port}"

    def _kube_409(self) -> str:
        times, name = self.rng.randint(1, 3), self._target()
        self.stack.cluster.fail(409, method="PATCH", plural="virtualservices", name=name,
                                times=times)
        return f"{times} PATCH {name}"

    def _kube_5xx(self) -> str:
        status, times = self.rng.choice((500, 503)), self.rng.randint(1, 3)
        method, name = self.rng.choice(("PATCH", "GET")), self._target()
        self.stack.cluster.fail(status, method=method, plural="virtualservices", name=name,
                                times=times)
        return f"{times} {method} {name} {status}"

    def _kube_stall(self) -> str:
        seconds = self.rng.uniform(2.0, 8.0)
        method, name = self.rng.choice(("PATCH", "GET")), self._target()
        self.stack.cluster.stall(seconds, method=method, plural="virtualservices", name=name)
        return f"{method} {name} {seconds:.1f} s"

    def _kube_lost_answer(self) -> str:
        status, name = self.rng.choice((503, 504)), self._target()
        self.stack.cluster.lose_answer(status, method="PATCH", plural="virtualservices",
                                       name=name)
        return f"PATCH {name} landed, answered {status}"

    def _slack_429(self) -> str:
        method, times = self.rng.choice(SLACK_METHODS), self.rng.randint(1, 3)
        self.stack.slack.rate_limit(method, times=times, retry_after=1.0)
        return f"{times} {method}"

    def _slack_5xx(self) -> str:
        method, times = self.rng.choice(SLACK_METHODS), self.rng.randint(1, 3)
        self.stack.slack.fail(method, "fatal_error", times=times, status=500)
        return f"{times} {method}"

    def _prometheus_stop(self) -> str:
        seconds = self.rng.uniform(*PROMETHEUS_DOWN_S)
        self.stack.prometheus.stop()
        self.prometheus_back_at = time.monotonic() + seconds
        return f"{seconds:.1f} s"
