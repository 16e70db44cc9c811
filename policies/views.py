"""A service as meshbot acts on it: its overrides merged over the policy's defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from meshbot.errors import PolicyError
from policies.model import Analysis, Defaults, Service, Slo, Subsets, TierApprovals
from policies.problems import from_validation_error

_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ServiceView:
    """Everything the policy says about one service, with nothing left to inherit."""

    name: str
    tier: str
    approvals: TierApprovals
    namespace: str
    virtual_services: tuple[str, ...]
    subsets: Subsets
    slo: Slo
    analysis: Analysis
    channel: str | None
    mirror_safe: bool
    gitops_allowed: bool
    callers: tuple[str, ...] = ()  # principals or namespaces allowed to call it (authz)
    clusters: tuple[str, ...] = ()  # empty: the policy names no clusters

    def approvals_for_weight(self, percent: int) -> int:
        """Approvals needed before the canary may carry ``percent`` of the traffic.

        The rollout state machine asks this for each step, so a rollout that would cross
        ``canary_above`` stops there for approval rather than at its start.
        """
        above = self.approvals.canary_above
        if percent >= 100 or (above is not None and percent > above):
            return self.approvals.promote
        return 0


def _deep_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged


def merge(base: _M, override: BaseModel | None) -> _M:
    """``base`` with the keys ``override`` actually sets (an explicit null counts as set).

    Re-validating the merged whole catches combinations neither part shows alone, such as a
    service's canary subset renamed to the default stable one.
    """
    if override is None:
        return base
    data = _deep_update(base.model_dump(), override.model_dump(exclude_unset=True))
    return type(base).model_validate(data)


def _merged(name: str, section: str, base: _M, override: BaseModel | None) -> _M:
    try:
        return merge(base, override)
    except ValidationError as exc:
        problems = from_validation_error(exc, type(base), ("services", name, section))
        raise PolicyError(problems) from exc


def resolve(
    name: str,
    service: Service,
    defaults: Defaults,
    approvals: TierApprovals,
    gitops_allowed: bool,
    clusters: tuple[str, ...] = (),
) -> ServiceView:
    """Raises ``PolicyError`` when the overrides and defaults together are inconsistent."""
    return ServiceView(
        name=name,
        tier=service.tier,
        approvals=approvals,
        namespace=service.namespace or defaults.namespace,
        virtual_services=tuple(service.virtual_services or [name]),
        subsets=_merged(name, "subsets", defaults.subsets, service.subsets),
        slo=_merged(name, "slo", defaults.slo, service.slo),
        analysis=_merged(name, "analysis", defaults.analysis, service.analysis),
        channel=service.channel,
        mirror_safe=service.mirror_safe,
        gitops_allowed=(
            gitops_allowed if service.gitops_allowed is None else service.gitops_allowed
        ),
        callers=tuple(service.callers or ()),
        clusters=clusters,
    )
