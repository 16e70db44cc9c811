"""Edits of a service's VirtualService routes beyond the weights, shared by the routing verbs
and by rollback: read and plan every VirtualService first (a refusal changes nothing), then write
each conditionally on the resourceVersion read, re-reading and re-planning on a conflict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rq import get_current_job

from jobs.domain.gitops import ensure_not_gitops_owned
from jobs.domain.routes import Route, Subsets, Weights
from jobs.domain.routes_match import plan_header_route_off, plan_mirror_off
from jobs.domain.server_fields import resource_version
from jobs.runtime.context import JobContext
from jobs.runtime.weights import WeightsPlan, plan_split, qualified, route_change, set_weights
from meshbot.errors import MeshbotError, MeshConflict, MeshUnavailable
from meshbot.plan import ObjectChange, merge_patch
from policies.views import ServiceView

Planner = Callable[[dict[str, Any]], list[Route] | None]
MAX_ATTEMPTS = 5


@dataclass
class Planned:
    """One VirtualService as read, and the ``spec.http`` to write (None: already as asked)."""

    name: str
    vs: dict[str, Any]
    http: list[Route] | None


def read_and_plan(ctx: JobContext, view: ServiceView, plan: Planner) -> list[Planned]:
    """Read and plan every VirtualService of the service, writing nothing: a plan that raises
    (MeshInvalid) or a GitOps owner stops everything before the first write."""
    planned = []
    for name in view.virtual_services:
        vs = ctx.kube.get_virtual_service(*qualified(view.namespace, name))
        ensure_not_gitops_owned(vs, allowed=view.gitops_allowed)
        planned.append(Planned(name, vs, plan(vs)))
    return planned


def changes(view: ServiceView, planned: list[Planned]) -> tuple[ObjectChange, ...]:
    """The planned VirtualServices as a dry run shows them: as read, and as written."""
    return tuple(route_change(view.namespace, p.name, p.vs, p.http) for p in planned)


def write_planned(ctx: JobContext, view: ServiceView, planned: list[Planned],
                  plan: Planner) -> list[str]:
    """Write each plan conditionally on the resourceVersion read; on a conflict re-read and
    re-plan (someone else's change survives). Returns the names of the objects changed."""
    changed: list[str] = []
    for item in planned:
        vs, http = item.vs, item.http
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if http is None:
                break
            rv = resource_version(vs, f"VirtualService {item.name}")
            try:
                ctx.kube.patch_virtual_service_route(*qualified(view.namespace, item.name),
                                                     http, rv)
                changed.append(item.name)
                break
            except MeshUnavailable:
                if not _landed(ctx, view, item.name, plan, rv):
                    raise
                changed.append(item.name)
                break
            except MeshConflict:
                if attempt == MAX_ATTEMPTS:
                    raise
                vs = ctx.kube.get_virtual_service(*qualified(view.namespace, item.name))
                ensure_not_gitops_owned(vs, allowed=view.gitops_allowed)
                http = plan(vs)
    return changed


def _landed(ctx: JobContext, view: ServiceView, name: str, plan: Planner,
            written_over: str) -> bool:
    """Whether a route write answered 5xx or not at all landed after all (the API server may
    commit it and lose the answer), as ``weights`` asks of a weight write: read back at once,
    the object changed since ``written_over`` and its plan finds nothing left to write. A read
    that fails too tells nothing: the write's own error stands."""
    try:
        vs = ctx.kube.get_virtual_service(*qualified(view.namespace, name))
        return plan(vs) is None and resource_version(vs, f"VirtualService {name}") != written_over
    except MeshbotError:
        return False


def edit_routes(ctx: JobContext, view: ServiceView, plan: Planner) -> list[str]:
    return write_planned(ctx, view, read_and_plan(ctx, view, plan), plan)


def canary_routes_off(view: ServiceView) -> Planner:
    """The plan that removes meshbot's header route and the managed route's mirror."""

    def plan(vs: dict[str, Any]) -> list[Route] | None:
        without_header = plan_header_route_off(vs)
        current = vs if without_header is None else {**vs, "spec": {**vs["spec"],
                                                                    "http": without_header}}
        without_mirror = plan_mirror_off(current, view.name, view.namespace)
        return without_mirror if without_mirror is not None else without_header

    return plan


def clear_canary_routes(ctx: JobContext, view: ServiceView) -> list[str]:
    """Remove meshbot's header route and the managed route's mirror: after a rollback no request
    reaches the canary subset, not even one with the preview header or a mirrored copy."""
    return edit_routes(ctx, view, canary_routes_off(view))


def back_to_stable(ctx: JobContext, view: ServiceView,
                   subsets: Subsets) -> tuple[Weights, Weights, list[str]]:
    """What every rollback does: all traffic to the stable subset, then meshbot's header route
    and mirror removed. (before, after, the VirtualServices whose extra routes were removed)."""
    job = get_current_job()
    before, after = set_weights(ctx.kube, view.namespace, view.virtual_services, view.name,
                                subsets, Weights(stable=100, canary=0),
                                allow_gitops=view.gitops_allowed,
                                # A retry after a write that landed though it was answered
                                # 5xx reports the split its first attempt found, not 100/0.
                                remember_before=(lambda read: ctx.store.first_before(
                                    f"{job.id}:back-to-stable", read))
                                if job is not None else None)
    return before, after, clear_canary_routes(ctx, view)


def plan_back_to_stable(ctx: JobContext, view: ServiceView, subsets: Subsets) -> WeightsPlan:
    """back_to_stable's two writes as one change per VirtualService: the split's plan, then the
    extra routes' plan made on the object that split leaves (as the second write re-reads it)."""
    split = plan_split(ctx.kube, view.namespace, view.virtual_services, view.name, subsets,
                       Weights(stable=100, canary=0), allow_gitops=view.gitops_allowed)
    off = canary_routes_off(view)
    found = []
    for change in split.changes:
        after = dict(change.after or {})
        extra = off(after)
        if extra is not None:
            after = merge_patch(after, {"spec": {"http": extra}})
        found.append(ObjectChange(change.kind, change.namespace, change.name, change.before,
                                  after))
    return WeightsPlan(split.before, tuple(found))
