"""The whole playground, live: what ``meshbot demo`` serves its page on.

The local stack (``playground.stack``: Redis, the Kubernetes emulator with the sample mesh, the
Slack stand-in), the mesh traffic generator splitting each service's requests by the live
VirtualService weights, a real Prometheus scraping it every second, and real ``meshbot serve``
and ``meshbot worker`` processes, all on loopback — the wiring of ``bench/rollback_time.py``.

The policy is the packaged one with a quicker analysis (a check every few seconds) so that a
person watching the page sees a canary judged, and a broken one rolled back, within seconds.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import yaml
from kubernetes import config
from kubernetes.client import CustomObjectsApi

from meshbot.settings import packaged_default_policy
from playground.deployment_controller import RolloutController
from playground.kube_emulator import RunningCluster
from playground.mesh_weights import VirtualServiceWeights
from playground.processes import MeshbotProcess, ServeProcess
from playground.prometheus_server import PrometheusServer
from playground.sample_mesh import NAMESPACE
from playground.slack_api import SlackApiStandIn
from playground.stack import local_stack
from playground.traffic import TrafficGenerator
from policies.loader import load_policy_file
from policies.policy import Policy

CHANNEL_NAME = "mesh-ops"
BOT_TOKEN = "xoxb-meshbot-playground"
SIGNING_SECRET = "meshbot-playground-signing-secret"
SCRAPE_S = 1.0
CHECK_INTERVAL_S = 4.0
FAILURE_THRESHOLD = 2
OUTSIDER = "U0OUTSIDER1"
# Who the page lets you be, in the policy's order of its members.
OPERATOR_NAMES = (("alex", "Alex (on-call operator)"), ("sam", "Sam (operator)"))
APPROVER_NAMES = (("priya", "Priya (approver)"), ("jordan", "Jordan (approver)"),
                  ("kim", "Kim (approver)"))


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    real_name: str
    role: str  # "operator", "approver" or "outsider"

    def as_json(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "real_name": self.real_name, "role": self.role}


@dataclass
class Playground:
    """Everything the page's server reads or drives; stopped when the context ends."""

    workdir: Path
    policy: Policy
    channel: str
    cluster: RunningCluster
    slack: SlackApiStandIn
    traffic: TrafficGenerator
    prometheus: PrometheusServer
    serve: ServeProcess
    worker: MeshbotProcess
    people: tuple[Person, ...]
    redis: redis.Redis
    started_at: float = field(default_factory=time.time)

    @property
    def events_url(self) -> str:
        return f"{self.serve.url}/slack/events"


def write_playground_policy(path: Path) -> Path:
    """The packaged policy, its analysis quickened for a person watching."""
    policy: dict[str, Any] = yaml.safe_load(packaged_default_policy().read_text())
    analysis = policy["defaults"]["analysis"]
    analysis.update(interval=f"{CHECK_INTERVAL_S:g}s", failure_threshold=FAILURE_THRESHOLD)
    # A whole `/mesh migrate` in a couple of minutes rather than the runbook's hour and more.
    policy["migrate"] = {"watch": "15s", "critical_watch": "20s", "error_threshold": 1.0}
    path.write_text(json.dumps(policy, indent=1))  # JSON is YAML
    return path


def people_of(policy: Policy) -> tuple[Person, ...]:
    operators = [Person(uid, name, real, "operator") for uid, (name, real)
                 in zip(policy.members(["operators"]), OPERATOR_NAMES, strict=False)]
    approvers = [Person(uid, name, real, "approver") for uid, (name, real)
                 in zip(policy.members(["approvers"]), APPROVER_NAMES, strict=False)]
    return (*operators, *approvers, Person(OUTSIDER, "visitor", "Visitor (no role)", "outsider"))


@contextlib.contextmanager
def live_playground(workdir: Path) -> Iterator[Playground]:
    """Start everything (stopped on the way out, whatever happens)."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    policy_path = write_playground_policy(workdir / "policy.yaml")
    policy = load_policy_file(policy_path)
    if not policy.channels:
        raise RuntimeError(f"{policy_path} names no channel")
    channel = policy.channels[0]
    people = people_of(policy)
    with contextlib.ExitStack() as stack:
        local = stack.enter_context(local_stack(
            workdir, policy_path, channel=(channel, CHANNEL_NAME), bot_token=BOT_TOKEN,
            signing_secret=SIGNING_SECRET))
        for person in people:
            local.slack.add_user(person.id, person.name, real_name=person.real_name)
        # The emulator runs no controllers: this one completes the rollouts a migration starts.
        stack.enter_context(RolloutController(local.cluster))
        api = stack.enter_context(config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=local.env["KUBECONFIG"]))
        weights = VirtualServiceWeights(CustomObjectsApi(api), [NAMESPACE])
        traffic = stack.enter_context(TrafficGenerator(weights, poll_interval=0.3,
                                                       default_rps=40.0))
        prometheus = stack.enter_context(PrometheusServer(
            workdir / "prometheus", [traffic.target], scrape_interval=SCRAPE_S))
        prometheus.wait_for_targets()
        env = {**local.env, "PROMETHEUS_URL": prometheus.url,
               "MESHBOT_SCRAPE_INTERVAL": f"{SCRAPE_S:g}", "MESHBOT_TICK_PERIOD": "0.5"}
        logs = {name: workdir / f"{name}.log" for name in ("serve", "worker")}
        for path in logs.values():
            path.unlink(missing_ok=True)
        worker = stack.enter_context(MeshbotProcess(["worker"], env, logs["worker"]))
        serve = stack.enter_context(ServeProcess(env, logs["serve"]))
        yield Playground(workdir, policy, channel, local.cluster, local.slack, traffic,
                         prometheus, serve, worker, people, local.redis)
