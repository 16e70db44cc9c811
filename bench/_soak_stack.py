"""The soak's stack: a private Redis with AOF, the Kubernetes emulator (the sample mesh plus
generated services), the Slack stand-in, the traffic generator with a real Prometheus scraping
it, one ``meshbot serve`` and a few ``meshbot worker`` processes — all on loopback.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from kubernetes import config
from kubernetes.client import CustomObjectsApi

from bench._stack import seed_services, vs_weights
from jobs.domain.routes_match import current_header, current_mirror
from playground.kube_emulator import RunningCluster, start_cluster
from playground.mesh_weights import VirtualServiceWeights
from playground.processes import MeshbotProcess, ServeProcess
from playground.prometheus_server import PrometheusServer
from playground.redis_server import RedisServer
from playground.sample_mesh import NAMESPACE, NETWORKING, TIERS, seed_sample_mesh
from playground.slack_api import SlackApiStandIn
from playground.stack import meshbot_env
from playground.traffic import TrafficGenerator

BOT_TOKEN = "xoxb-meshbot-soak"
SIGNING_SECRET = "meshbot-soak-signing-secret"
CHANNEL = "C0SOAKOPS"
OPERATORS = ("U0SOAKOP1", "U0SOAKOP2", "U0SOAKOP3")
APPROVERS = ("U0SOAKAP1", "U0SOAKAP2", "U0SOAKAP3")
INTERVAL_S = 2.0  # every rollout's analysis interval
STEPS = (10, 25, 50)
APPROVAL_TTL_S = 60
SCRAPE_S = 1.0
TICK_S = 0.5
CRITICAL = TIERS["critical"]  # promote needs two approvals; a canary above 30 % too


def services(extra: int) -> list[str]:
    """The sample mesh's nine services, then ``extra`` generated ones."""
    return [s for tier in TIERS.values() for s in tier] + [f"soak-{i:03d}" for i in range(extra)]


def write_policy(path: Path, names: Sequence[str]) -> Path:
    verbs = ("help", "status", "canary", "rollout", "promote", "rollback", "pause", "resume",
             "abort", "ab", "mirror")
    policy: dict[str, Any] = {
        "version": 1,
        "roles": {"operators": list(OPERATORS), "approvers": list(APPROVERS)},
        "channels": [CHANNEL],
        "defaults": {
            "namespace": NAMESPACE,
            "subsets": {"stable": "stable", "canary": "canary"},
            "analysis": {"interval": INTERVAL_S, "failure_threshold": 2, "steps": list(STEPS),
                         "no_data": "hold", "deadline": 3600.0},
            "slo": {"success_rate": 99.0, "latency_p99_ms": 100.0, "min_request_rate": 1.0,
                    "burn_rate": {"windows": ["5m", "1h"]}},
        },
        "approvals": {"ttl": f"{APPROVAL_TTL_S}s"},
        "tiers": {"pilot": {"approvals": {"promote": 0, "emergency": 2}},
                  "critical": {"approvals": {"promote": 2, "canary_above": 30,
                                             "emergency": 2}}},
        "permissions": {verb: ["everyone"] if verb in ("help", "status")
                        else ["operators", "approvers"] if verb == "rollback"
                        else ["operators"] for verb in verbs},
        "approve": ["approvers"],
        "services": {name: {"tier": "critical" if name in CRITICAL else "pilot"}
                     for name in names},
    }
    path.write_text(json.dumps(policy, indent=1))  # JSON is YAML
    return path


@dataclass
class SoakStack:
    tmp: Path
    names: list[str]
    redis_server: RedisServer
    redis: redis.Redis
    cluster: RunningCluster
    slack: SlackApiStandIn
    prometheus: PrometheusServer
    traffic: TrafficGenerator
    env: dict[str, str]
    serve: ServeProcess
    live: list[MeshbotProcess] = field(default_factory=list)
    every: list[MeshbotProcess] = field(default_factory=list)  # every worker ever started
    killed: list[str] = field(default_factory=list)  # logs of the workers we SIGKILLed

    def dead_workers(self) -> list[str]:
        """Workers that exited by themselves (not killed by the soak): their log paths."""
        return [str(w.log_path) for w in self.live
                if w.process is None or w.process.poll() is not None]

    def start_worker(self) -> MeshbotProcess:
        n = len(self.every) + 1
        worker = MeshbotProcess(["worker"], self.env, self.tmp / f"worker-{n}.log").start()
        self.live.append(worker)
        self.every.append(worker)
        return worker

    def kill_worker(self, index: int) -> MeshbotProcess:
        """SIGKILL one live worker and start its replacement; the replacement."""
        victim = self.live.pop(index % len(self.live))
        self.killed.append(str(victim.log_path))
        victim.kill()
        return self.start_worker()

    def weights(self, service: str) -> dict[str, int]:
        return vs_weights(self.cluster, service)

    def routes(self, service: str) -> tuple[str | None, float | None]:
        """meshbot's header route (as ``name: value``) and the managed route's mirror share, as
        the VirtualService shows them (None: not there)."""
        vs = self.cluster.get(*NETWORKING, "virtualservices", NAMESPACE, service)
        header = current_header(vs)
        return (None if header is None else str(header)), current_mirror(vs, service, NAMESPACE)

    def logs(self) -> dict[str, str]:
        found = {"serve": self.serve.log()}
        for i, worker in enumerate(self.every, 1):
            found[f"worker-{i}"] = worker.log()
        return found


@contextlib.contextmanager
def soak_stack(tmp: Path, extra_services: int, workers: int) -> Iterator[SoakStack]:
    names = services(extra_services)
    policy = write_policy(tmp / "policy.yaml", names)
    with (RedisServer(tmp / "redis", appendonly=True) as redis_server,
          start_cluster() as cluster,
          SlackApiStandIn() as slack):
        seed_sample_mesh(cluster)
        seed_services(cluster, names[len(services(0)):])
        slack.add_channel(CHANNEL, "mesh-ops")
        env = meshbot_env(slack_url=slack.base_url, bot_token=BOT_TOKEN,
                          signing_secret=SIGNING_SECRET, redis_url=redis_server.url,
                          kubeconfig=cluster.write_kubeconfig(tmp / "kubeconfig"),
                          policy=policy)
        api = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=env["KUBECONFIG"])
        source = VirtualServiceWeights(CustomObjectsApi(api), [NAMESPACE])
        client = redis.Redis.from_url(redis_server.url, socket_timeout=5,
                                      socket_connect_timeout=2)
        with (api, TrafficGenerator(source, poll_interval=0.2) as traffic,
              PrometheusServer(tmp / "prometheus", [traffic.target],
                               scrape_interval=SCRAPE_S) as prometheus):
            env.update({"PROMETHEUS_URL": prometheus.url,
                        "MESHBOT_SCRAPE_INTERVAL": f"{SCRAPE_S:g}",
                        "MESHBOT_TICK_PERIOD": f"{TICK_S:g}"})
            serve = ServeProcess(env, tmp / "serve.log", workers=2, threads=4)
            stack = SoakStack(tmp, names, redis_server, client, cluster, slack, prometheus,
                              traffic, env, serve)
            try:
                # serve starts while Prometheus makes its first scrapes; the workers as before,
                # once serve answers /healthz; the load begins once every target is up.
                serve.start()
                for _ in range(workers):
                    stack.start_worker()
                prometheus.wait_for_targets()
                yield stack
            finally:
                stop_all([*stack.live, serve])
                client.close()


def stop_all(processes: Sequence[MeshbotProcess], timeout: float = 10.0) -> None:
    """``MeshbotProcess.stop`` for all of them at once: one SIGTERM each (a warm shutdown),
    then each waited for, SIGKILLed only if it outlives ``timeout``."""
    running = [p for p in processes if p.process is not None and p.process.poll() is None]
    for p in running:
        assert p.process is not None
        p.process.terminate()
    for p in running:
        assert p.process is not None
        try:
            p.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.process.kill()
            p.process.wait(timeout=timeout)
    for p in processes:
        p.process = None


def rss_mb(pid: int) -> float | None:
    """VmRSS of a process from /proc/<pid>/status, in MB (None: it is gone)."""
    try:
        for row in Path(f"/proc/{pid}/status").read_text().splitlines():
            if row.startswith("VmRSS:"):
                return int(row.split()[1]) / 1024
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]
