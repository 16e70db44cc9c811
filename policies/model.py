"""The sections of a policy file, one pydantic model each.

Every model forbids unknown keys (a misspelt key would otherwise silently fall back to a default,
which for an approval count means fewer approvals) and is strict (``"2"`` is not a count).
The per-service overrides are separate models whose fields are all optional: what a service
leaves out is inherited from ``defaults`` (see ``policies.views``), which the JSON Schema then
says, instead of showing misleading defaults.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from policies.fields import (
    Caller,
    Count,
    DnsLabel,
    Duration,
    Emoji,
    HttpUrlText,
    LabelKey,
    LinkTemplate,
    Name,
    Percent,
    SlackChannel,
    Steps,
    VirtualServiceRef,
    Weight,
    Windows,
    invalid,
)

NoData = Literal["hold", "rollback"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Subsets(Section):
    """The DestinationRule subsets that play the stable and canary roles."""

    stable: DnsLabel = Field("stable", description="subset that serves production traffic")
    canary: DnsLabel = Field("canary", description="subset that receives the canary traffic")

    @model_validator(mode="after")
    def _distinct(self) -> Subsets:
        if self.stable == self.canary:
            raise invalid(
                f"stable and canary both name subset {self.stable!r}",
                "give the canary role a different subset name",
            )
        return self


class Analysis(Section):
    """How a rollout is analysed and advanced."""

    interval: Duration = Field(description="time between analysis ticks, e.g. 30s")
    failure_threshold: int = Field(
        ge=1, le=100, description="failed checks in a row that trigger an automatic rollback"
    )
    steps: Steps = Field(
        description="canary weights of a rollout, strictly increasing, each 1..99 "
        "(100 is a promote)"
    )
    no_data: NoData = Field(
        description="what to do when there is no SLO evidence (no traffic, empty query, "
        "Prometheus down): hold the step, or roll back"
    )
    deadline: Duration = Field(
        "10m",
        validate_default=True,
        description="how long a rollout may hold for lack of data before meshbot alerts and "
        "then follows no_data",
    )
    version_label: LabelKey = Field(
        "version", description="pod label whose value tells the subsets' pods apart"
    )
    sequential: bool = Field(
        True,
        description="compare the canary with the stable on counts since the step began "
        "(anytime-valid e-values) and roll back as soon as the evidence is conclusive; false: "
        "only the SLO guards judge",
    )
    alpha: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="chance at most that a canary no worse than the stable is ever rolled back "
        "by the comparison over a whole rollout; split evenly between the error and the latency "
        "test and across the steps (each test of a step reaches its verdict at e-value >= "
        "2 x steps / alpha)",
    )
    tolerance: float = Field(
        0.1,
        ge=0,
        le=10,
        description="relative slack: the canary counts as worse only beyond (1 + tolerance) "
        "times the stable's error (or slow-request) rate, and beyond tolerance_floor",
    )
    tolerance_floor: float = Field(
        0.001,
        ge=0,
        lt=1,
        description="absolute slack (a fraction: 0.001 = 0.1 percentage points): the canary "
        "counts as worse only beyond the stable's rate plus this, and beyond tolerance",
    )


class BurnRate(Section):
    """Multi-window error-budget burn-rate alerting."""

    factor: float = Field(14.4, gt=0, description="burn-rate multiple that pages")
    windows: Windows = Field(
        ["5m", "1h"],  # validate_default turns them into seconds
        validate_default=True,
        description="look-back windows, shortest first; all must burn faster than factor",
    )


class Slo(Section):
    """The service-level objectives a canary is judged against."""

    success_rate: Percent = Field(description="minimum % of requests answered without a 5xx")
    latency_p99_ms: float = Field(gt=0, description="maximum 99th-percentile latency in ms")
    latency_p95_ms: float | None = Field(
        None, gt=0, description="maximum 95th-percentile latency in ms; null: not checked"
    )
    min_request_rate: float = Field(
        ge=0,
        description="requests per second that must reach the canary subset for a check to "
        "count as evidence; below it the check is 'no data'",
    )
    availability: float = Field(
        99.9, gt=0, lt=100, description="availability objective (%) behind the burn-rate alerts"
    )
    burn_rate: BurnRate = Field(
        default_factory=BurnRate, description="burn-rate alerting on the availability budget"
    )


class Defaults(Section):
    """What every service gets unless its own entry overrides it."""

    namespace: DnsLabel = Field(description="Kubernetes namespace of the services")
    subsets: Subsets = Field(default_factory=Subsets, description="subset names")
    analysis: Analysis = Field(description="rollout analysis settings")
    slo: Slo = Field(description="service-level objectives")


class SubsetsOverride(Section):
    """Subset names for this service; an omitted key is taken from defaults.subsets."""

    stable: DnsLabel | None = Field(None, description="stable subset (default: defaults)")
    canary: DnsLabel | None = Field(None, description="canary subset (default: defaults)")


class AnalysisOverride(Section):
    """Analysis settings for this service; an omitted key is taken from defaults.analysis."""

    interval: Duration | None = Field(None, description="see defaults.analysis.interval")
    failure_threshold: int | None = Field(
        None, ge=1, le=100, description="see defaults.analysis.failure_threshold"
    )
    steps: Steps | None = Field(None, description="see defaults.analysis.steps")
    no_data: NoData | None = Field(None, description="see defaults.analysis.no_data")
    deadline: Duration | None = Field(None, description="see defaults.analysis.deadline")
    version_label: LabelKey | None = Field(None, description="see defaults.analysis.version_label")
    sequential: bool | None = Field(None, description="see defaults.analysis.sequential")
    alpha: float | None = Field(None, gt=0, lt=1, description="see defaults.analysis.alpha")
    tolerance: float | None = Field(
        None, ge=0, le=10, description="see defaults.analysis.tolerance"
    )
    tolerance_floor: float | None = Field(
        None, ge=0, lt=1, description="see defaults.analysis.tolerance_floor"
    )


class BurnRateOverride(Section):
    """Burn-rate settings for this service; an omitted key is taken from defaults."""

    factor: float | None = Field(None, gt=0, description="see defaults.slo.burn_rate.factor")
    windows: Windows | None = Field(None, description="see defaults.slo.burn_rate.windows")


class SloOverride(Section):
    """SLOs for this service; an omitted key is taken from defaults.slo."""

    success_rate: Percent | None = Field(None, description="see defaults.slo.success_rate")
    latency_p99_ms: float | None = Field(None, gt=0, description="see defaults.slo.latency_p99_ms")
    latency_p95_ms: float | None = Field(
        None, gt=0, description="see defaults.slo.latency_p95_ms (null here turns it off)"
    )
    min_request_rate: float | None = Field(
        None, ge=0, description="see defaults.slo.min_request_rate"
    )
    availability: float | None = Field(
        None, gt=0, lt=100, description="see defaults.slo.availability"
    )
    burn_rate: BurnRateOverride | None = Field(None, description="see defaults.slo.burn_rate")


class Approvals(Section):
    """How approvers answer an approval request in Slack."""

    approve_emoji: Emoji = Field("white_check_mark", description="reaction that approves")
    reject_emoji: Emoji = Field("x", description="reaction that rejects (cancels) the request")
    ttl: Duration = Field(
        "30m", validate_default=True, description="how long a request waits before it expires"
    )

    @model_validator(mode="after")
    def _distinct(self) -> Approvals:
        if self.approve_emoji == self.reject_emoji:
            raise invalid(
                f"approve_emoji and reject_emoji are both {self.approve_emoji!r}",
                "pick a different reject_emoji (e.g. x)",
            )
        return self


class TierApprovals(Section):
    """Approvals a tier's services need (0: none)."""

    promote: Count = Field(
        description="approvals for a promote, a blue-green switch, or a canary weight of 100"
    )
    canary_above: Weight | None = Field(
        None,
        description="a canary weight strictly above this needs the promote count; "
        "null: only 100 does",
    )
    emergency: Count = Field(
        2,
        description="approvals for an emergency in a namespace holding this tier's services "
        "(the larger of this and namespace_approvals.emergency applies)",
    )
    unlock: Count = Field(1, description="approvals to break a service's stale lock")


class Tier(Section):
    """A class of services that share approval rules."""

    approvals: TierApprovals = Field(description="approval counts for this tier")
    description: str | None = Field(None, description="free text shown in help")


class NamespaceApprovals(Section):
    """Approvals that namespace-wide actions need (0: none)."""

    mtls: Count = Field(1, description="approvals to change a namespace's mTLS mode")
    inject_namespace: Count = Field(
        1, description="approvals to turn sidecar injection on or off for a namespace"
    )
    restore: Count = Field(2, description="approvals to restore mesh config from a backup")
    emergency: Count = Field(2, description="approvals for an emergency (at least)")
    freeze_off: Count = Field(1, description="approvals to lift a change freeze")
    authz: Count = Field(
        1, description="approvals to add or remove a namespace's AuthorizationPolicies (authz "
        "deny-all, allow, remove; listing them needs none)"
    )


class Links(Section):
    """URL templates of the observability stack, shown in every rollout thread, alert thread
    and status reply. Placeholders: {service}, {namespace}, {cluster}, {start_ms}, {end_ms}
    (the time range of the rollout, in Unix milliseconds)."""

    grafana: LinkTemplate | None = Field(None, description="dashboard of the service")
    kiali: LinkTemplate | None = Field(None, description="the service's graph in Kiali")
    jaeger: LinkTemplate | None = Field(None, description="the service's traces")
    loki: LinkTemplate | None = Field(None, description="the service's logs")


class Cluster(Section):
    """A Kubernetes cluster meshbot drives, and the Prometheus that watches it."""

    context: str | None = Field(
        None,
        description="kubeconfig context to reach it; null: the cluster meshbot runs in (its "
        "service account), or KUBECONFIG's current context",
    )
    prometheus_url: HttpUrlText | None = Field(
        None, description="Prometheus of this cluster; null: PROMETHEUS_URL"
    )


class Service(Section):
    """One service meshbot may act on; every key but tier overrides defaults."""

    tier: Name = Field(description="name of a tier defined under tiers")
    namespace: DnsLabel | None = Field(None, description="namespace (default: defaults)")
    virtual_services: list[VirtualServiceRef] | None = Field(
        None,
        min_length=1,
        description="VirtualServices changed together (name, or namespace/name); "
        "default: [the service's name]",
    )
    subsets: SubsetsOverride | None = Field(None, description="subset names")
    channel: SlackChannel | None = Field(
        None,
        description="channel for this service's threads and alerts; its commands are "
        "accepted there as well as in the global channels",
    )
    slo: SloOverride | None = Field(None, description="SLO overrides")
    analysis: AnalysisOverride | None = Field(None, description="analysis overrides")
    mirror_safe: bool = Field(
        False,
        description="true when mirroring traffic to the canary is harmless (the service does "
        "not write); otherwise a mirror asks for confirmation",
    )
    clusters: list[Name] | None = Field(
        None,
        min_length=1,
        description="the clusters (names under the top-level clusters) the service runs in; "
        "default: every cluster the policy names",
    )
    callers: list[Caller] | None = Field(
        None,
        description="who calls this service: principals (cluster.local/ns/<ns>/sa/<sa>) or "
        "namespaces; authz deny-all, allow and remove are refused while they would cut one "
        "that no ALLOW rule admits (its recent traffic in Prometheus counts too)",
    )
    gitops_allowed: bool | None = Field(
        None,
        description="allow changing objects owned by Argo CD/Flux for this service "
        "(default: the top-level gitops_allowed)",
    )
