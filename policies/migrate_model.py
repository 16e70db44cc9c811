"""The policy sections of ``/mesh migrate``: its watch windows and the Telemetry it writes.

Kept apart from ``policies.model`` so the workflow's keys read as one unit; the root model
(``policies.policy``) holds them as ``migrate`` and ``telemetry``.
"""

from __future__ import annotations

from pydantic import Field

from policies.fields import Duration, Name
from policies.model import Section


class Migrate(Section):
    """How `/mesh migrate` judges a service it has just moved onto the mesh."""

    watch: Duration = Field(
        "5m", validate_default=True,
        description="phase 3: how long a core service's error rate is watched after its "
        "sidecar injection before the next service",
    )
    error_threshold: float = Field(
        1.0, gt=0, le=100,
        description="phase 3: percent of 5xx answers above which the core service's injection "
        "is undone and the workflow stops (phase 4's green is judged by the service's SLOs "
        "through meshbot's analysis)",
    )
    critical_watch: Duration = Field(
        "30m", validate_default=True,
        description="phase 4: how long a critical service's green copy takes 10 % of the "
        "traffic (and the canary: true header) under meshbot's analysis before the cut-over",
    )
    rollout_timeout: Duration = Field(
        "10m", validate_default=True,
        description="phases 2-4: how long a Deployment's rollout (and a green copy's) may take "
        "to complete, all its pods ready with the sidecar, before the service is put back "
        "and the workflow stops (the runbook's kubectl rollout status --timeout)",
    )


class TelemetryProviders(Section):
    """The providers the namespace's Telemetry resource names (as meshConfig defines them)."""

    metrics: list[Name] = Field(["prometheus"], description="metrics providers")
    tracing: list[Name] = Field(["jaeger"], description="tracing providers")
    access_logging: list[Name] = Field(["otel"], description="access-log providers")


class Telemetry(Section):
    """The Telemetry resource phase 5 of `/mesh migrate` writes in the namespace."""

    providers: TelemetryProviders = Field(
        default_factory=TelemetryProviders,
        description="providers of metrics, tracing and access logs",
    )
