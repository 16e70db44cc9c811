"""The runbook's migration as data: its phases, the steps of each, and the workflow's record.

The five phases are fixed by the runbook: a readiness gate, the pilot tier injected in place,
the core tier injected in place under an error-rate watch, the critical tier by blue-green, and
the namespace made STRICT with its Telemetry. The steps are worked out once, when the workflow
starts, from the policy's tiers; the record keeps a cursor into them, so a worker that dies
resumes at the step it was on (every step can run again without harm). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

PHASES = (1, 2, 3, 4, 5)
TIER_OF_PHASE = {2: "pilot", 3: "core", 4: "critical"}
PHASE_NAMES = {
    1: "readiness gate",
    2: "pilot services",
    3: "core services",
    4: "critical services (blue-green)",
    5: "finalize",
}
# What each step of a service does, in order. A phase-4 service passes its point of no return
# at ``cutover``: before it an abort puts it back as it was, from it on the service is finished.
SERVICE_STEPS: dict[int, tuple[str, ...]] = {
    2: ("inject", "rollout", "pods"),
    3: ("inject", "rollout", "watch"),
    4: ("backup", "green", "green_rollout", "split", "watch", "approve", "cutover", "settle",
        "remove_blue", "inject_idle", "idle_rollout"),
}
NAMESPACE_STEPS: dict[int, tuple[str, ...]] = {
    1: ("gate",),
    5: ("approve", "label", "tls", "strict", "telemetry"),
}
CUTOVER = "cutover"
WATCHES = frozenset({"watch"})


class Status(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    ABORTING = "aborting"  # asked to stop; the service in flight is being put back or finished
    DONE = "done"
    STOPPED = "stopped"  # stopped by a check (gate, errors, breach, a rejected approval)
    ABORTED = "aborted"

    @property
    def active(self) -> bool:
        return self in (Status.RUNNING, Status.PAUSED, Status.ABORTING)


# Stored records ignore fields they do not know: during a rolling upgrade an older meshbot
# reads workflows a newer one wrote (and a newer one reads old ones through the defaults).
_STORED = ConfigDict(frozen=True, extra="ignore")


class Step(BaseModel):
    model_config = _STORED

    phase: int
    kind: str
    service: str | None = None

    @property
    def key(self) -> str:
        return f"{self.phase}:{self.service or '-'}:{self.kind}"


class Workflow(BaseModel):
    """One namespace's migration, as Redis keeps it (``jobs.adapters.migration_store``)."""

    model_config = _STORED

    id: str
    namespace: str
    request_id: str
    requester: str
    channel: str
    thread_ts: str = ""
    status_ts: str = ""  # the one status message, updated in place
    phases: tuple[int, ...]
    force: bool = False
    steps: tuple[Step, ...]
    cursor: int = 0
    status: Status = Status.RUNNING
    # Per step key: what the step must remember across workers (templates it replaced, when a
    # watch began, the routes it changed, the approval it asked for).
    memo: dict[str, dict[str, Any]] = Field(default_factory=dict)
    approvals: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    last: str = ""  # the last numbers measured
    note: str = ""  # why it stopped, or what it waits for
    # The last pause, resume or abort: its request and the status it found. Its retry (the
    # worker died after the change) says and audits that change instead of refusing it.
    control_by: str = ""
    control_from: str = ""
    version: int = 0
    started_at: float = 0.0
    updated_at: float = 0.0

    @property
    def step(self) -> Step | None:
        return self.steps[self.cursor] if self.cursor < len(self.steps) else None

    def remembered(self, step: Step) -> dict[str, Any]:
        return dict(self.memo.get(step.key) or {})

    def remember(self, step: Step, **values: Any) -> Workflow:
        memo = dict(self.memo)
        memo[step.key] = {**(memo.get(step.key) or {}), **values}
        return self.model_copy(update={"memo": memo})

    def service_steps(self, service: str, phase: int) -> list[int]:
        """Indexes of the steps of ``service`` in ``phase``."""
        return [i for i, s in enumerate(self.steps) if s.service == service and s.phase == phase]


def parse_phases(text: str | None) -> tuple[int, ...]:
    """``all`` (or nothing) → 1..5; ``3`` → phase 3 alone. The grammar checked the range."""
    if text is None or text == "all":
        return PHASES
    return (int(text),)


def tier_services(services: Mapping[str, str]) -> dict[str, list[str]]:
    """Tier → the namespace's services of that tier, in name order (service → tier in)."""
    found: dict[str, list[str]] = {tier: [] for tier in TIER_OF_PHASE.values()}
    for name in sorted(services):
        found.setdefault(services[name], []).append(name)
    return found


def build_steps(phases: Sequence[int], tiers: Mapping[str, Sequence[str]]) -> tuple[Step, ...]:
    steps: list[Step] = []
    for phase in sorted(set(phases)):
        if phase in NAMESPACE_STEPS:
            steps += [Step(phase=phase, kind=kind) for kind in NAMESPACE_STEPS[phase]]
            continue
        for service in tiers.get(TIER_OF_PHASE[phase], ()):
            steps += [Step(phase=phase, kind=kind, service=service)
                      for kind in SERVICE_STEPS[phase]]
    return tuple(steps)


def past_cutover(workflow: Workflow, index: int) -> bool:
    """Whether the phase-4 service of step ``index`` has had its traffic moved to green."""
    step = workflow.steps[index]
    if step.phase != 4 or step.service is None:
        return False
    own = workflow.service_steps(step.service, 4)
    cut = next(i for i in own if workflow.steps[i].kind == CUTOVER)
    return index > cut or (index == cut and bool(workflow.remembered(step).get("done")))


def in_flight(workflow: Workflow) -> str | None:
    """The service the cursor is in the middle of (some of its steps done), if any."""
    step = workflow.step
    if step is None or step.service is None:
        return None
    own = workflow.service_steps(step.service, step.phase)
    return step.service if workflow.cursor > own[0] or workflow.remembered(step) else None


# --- what `kubectl rollout status` judges -----------------------------------------------------

def rollout_complete(deployment: Mapping[str, Any]) -> tuple[bool, str]:
    """(complete, why not): the controller saw the newest spec, every replica is updated and
    available, and no old replica is left."""
    meta, spec = deployment.get("metadata") or {}, deployment.get("spec") or {}
    status = deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    generation, observed = int(meta.get("generation") or 0), int(status.get("observedGeneration")
                                                                  or 0)
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if observed < generation:
        return False, f"waiting for the controller to see generation {generation}"
    if updated < wanted:
        return False, f"{updated} of {wanted} replicas updated"
    if total > updated:
        return False, f"{total - updated} old replicas pending termination"
    if available < updated:
        return False, f"{available} of {updated} updated replicas available"
    return True, f"{updated}/{wanted} updated and available"


SIDECAR = "istio-proxy"


def ready_with_sidecar(pods: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(pods Ready with an istio-proxy container, pods not being deleted)."""
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    ready = 0
    for pod in live:
        containers = (pod.get("spec") or {}).get("containers") or []
        conditions = (pod.get("status") or {}).get("conditions") or []
        has_proxy = any(c.get("name") == SIDECAR for c in containers) or any(
            c.get("name") == SIDECAR for c in (pod.get("spec") or {}).get("initContainers") or [])
        if has_proxy and any(c.get("type") == "Ready" and c.get("status") == "True"
                             for c in conditions):
            ready += 1
    return ready, len(live)


def selects(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- the error-rate watch ----------------------------------------------------------------------

def error_queries(service: str, namespace: str, window: str,
                  version: str | None = None) -> tuple[str, str]:
    """(5xx per second, requests per second) reaching ``service`` (one ``version`` of it)."""
    matchers = [
        'reporter="destination"',
        f'destination_service_name="{service}"',
        f'destination_workload_namespace="{namespace}"',
    ]
    if version is not None:
        matchers.append(f'destination_version="{version}"')
    sel = ", ".join(matchers)
    return (f'sum(rate(istio_requests_total{{{sel}, response_code=~"5.."}}[{window}]))',
            f"sum(rate(istio_requests_total{{{sel}}}[{window}]))")


def error_percent(errors: float | None, total: float | None) -> float | None:
    """Percent of 5xx; None without traffic (no evidence either way). No 5xx series at all
    (Istio creates it with the first 5xx) is zero errors."""
    if total is None or total <= 0:
        return None
    return 100.0 * (errors or 0.0) / total


def breached(percent: float | None, threshold: float) -> bool:
    return percent is not None and percent > threshold
