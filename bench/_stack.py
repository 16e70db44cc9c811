"""The stand-ins the analysis benchmarks share: a private Redis, the Kubernetes emulator seeded
with the sample mesh (and as many extra services as a benchmark needs), the Slack stand-in, and
a policy written for the run — the same pieces tests/fixtures/live.py wires together.
"""

from __future__ import annotations

import contextlib
import json
import statistics
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from playground.kube_emulator import RunningCluster
from playground.sample_mesh import (
    NAMESPACE,
    NETWORKING,
    VERSIONS,
    deployment,
    destination_rule,
    ready_pod,
    virtual_service,
)
from playground.stack import LocalStack, local_stack

BOT_TOKEN = "xoxb-meshbot-bench"
SIGNING_SECRET = "meshbot-bench-signing-secret"
CHANNEL = "C0BENCHOPS"
OPERATOR = "U0BENCHOP1"
APPROVER = "U0BENCHAP1"
SUCCESS_RATE = 99.0  # the policy's SLO; the rollback benchmark's floor probe uses it too
LATENCY_P99_MS = 100.0
MIN_REQUEST_RATE = 1.0
VERBS = ("help", "status", "canary", "rollout", "promote", "rollback", "pause", "resume", "abort")


def write_policy(path: Path, services: Iterable[str], *, interval_s: float,
                 failure_threshold: int, steps: Sequence[int] = (10, 50),
                 burn_windows: Sequence[str] = ("5m", "1h")) -> Path:
    """A policy listing ``services`` (all tier pilot: no approval for a canary or a promote)."""
    everyone = {verb: ["everyone"] if verb in ("help", "status") else ["operators"]
                for verb in VERBS}
    everyone["rollback"] = ["operators", "approvers"]
    policy: dict[str, Any] = {
        "version": 1,
        "roles": {"operators": [OPERATOR], "approvers": [APPROVER]},
        "channels": [CHANNEL],
        "defaults": {
            "namespace": NAMESPACE,
            "subsets": {"stable": "stable", "canary": "canary"},
            "analysis": {"interval": interval_s, "failure_threshold": failure_threshold,
                         "steps": list(steps), "no_data": "hold", "deadline": 600.0},
            "slo": {"success_rate": SUCCESS_RATE, "latency_p99_ms": LATENCY_P99_MS,
                    "min_request_rate": MIN_REQUEST_RATE,
                    "burn_rate": {"windows": list(burn_windows)}},
        },
        "tiers": {"pilot": {"approvals": {"promote": 0, "emergency": 2}}},
        "permissions": everyone,
        "approve": ["approvers"],
        "services": {name: {"tier": "pilot"} for name in services},
    }
    # JSON is YAML: the policy loader reads it as is, and quoting is always right.
    path.write_text(json.dumps(policy, indent=1))
    return path


def seed_services(cluster: RunningCluster, services: Iterable[str],
                  *, workloads: bool = True) -> None:
    """Each service as the sample mesh has its own: VirtualService at stable 100 / canary 0,
    DestinationRule (stable v1, canary v2) and, if ``workloads``, a ready Deployment and Pod
    per version (what a canary's preflight checks)."""
    for service in services:
        cluster.put_object(*NETWORKING, "virtualservices", virtual_service(service))
        cluster.put_object(*NETWORKING, "destinationrules", destination_rule(service))
        if not workloads:
            continue
        for version in VERSIONS.values():
            labels = {"app": service, "version": version}
            name = f"{service}-{version}"
            cluster.put_object("apps", "v1", "deployments",
                               deployment(name, labels, NAMESPACE))
            cluster.put_object("", "v1", "pods", ready_pod(f"{name}-0", labels, NAMESPACE))


def vs_weights(cluster: RunningCluster, service: str) -> dict[str, int]:
    """The managed route's weights of ``service``'s VirtualService, read from the emulator."""
    vs = cluster.get(*NETWORKING, "virtualservices", NAMESPACE, service)
    route = next(r for r in vs["spec"]["http"] if not r.get("match"))
    return {d["destination"]["subset"]: int(d.get("weight", 100)) for d in route["route"]}


Stack = LocalStack


@contextlib.contextmanager
def base_stack(tmp: Path, policy: Path, *, sample_mesh: bool = True) -> Iterator[Stack]:
    """Redis, the emulator (with the sample mesh unless told not to) and the Slack stand-in."""
    with local_stack(tmp, policy, channel=(CHANNEL, "mesh-ops"), bot_token=BOT_TOKEN,
                     signing_secret=SIGNING_SECRET, sample_mesh=sample_mesh) as stack:
        yield stack


def summary(values: Sequence[float]) -> str:
    """``median X s, max Y s`` of a non-empty list."""
    return f"median {statistics.median(values):5.2f} s, max {max(values):5.2f} s"
