"""Set a service's traffic split on its VirtualServices: read, plan, conditional write, retry.

Every VirtualService is read and planned before the first write, so a refusal (GitOps owner, a
route meshbot cannot manage, no ready canary pods) changes nothing. Each write is conditional on
the resourceVersion that was read; on a conflict the object is re-read and re-planned, but only
after ``should_continue()`` confirms the rollout still wants this weight — after a rollback the
job never re-applies its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jobs.adapters.kube import KubeClient
from jobs.domain.gitops import ensure_not_gitops_owned
from jobs.domain.routes import (
    Route,
    RoutePlan,
    Subsets,
    Weights,
    host_matches,
    plan_weights,
    read_weights,
)
from jobs.domain.server_fields import resource_version
from meshbot.errors import MeshbotError, MeshConflict, MeshUnavailable, PermanentError, Refused
from meshbot.plan import ObjectChange
from rendering import traffic as traffic_text


class Abandoned(PermanentError):
    """The caller's ``should_continue()`` said stop: the rollout moved on (e.g. rolled back)."""


class Overtaken(Abandoned):
    """A rollback of the service was accepted after this request, found where the request was
    about to commit its change (not only when its job started): nothing was applied. ``channel``
    and ``ts`` name the thread the request had opened, which must say so too."""

    def __init__(self, message: str, *, channel: str | None = None,
                 ts: str | None = None) -> None:
        super().__init__(message)
        self.channel = channel
        self.ts = ts


def _always() -> bool:
    return True


def defined_subsets(client: KubeClient, namespace: str, host: str) -> dict[str, dict[str, str]]:
    """Subset name → labels, from every DestinationRule in the namespace for the service's host."""
    subsets: dict[str, dict[str, str]] = {}
    for rule in client.list_destination_rules(namespace):
        spec: Mapping[str, Any] = rule.get("spec") or {}
        rule_ns = rule.get("metadata", {}).get("namespace", namespace)
        if host_matches(str(spec.get("host", "")), host, namespace, rule_ns):
            for subset in spec.get("subsets") or []:
                subsets[str(subset.get("name"))] = dict(subset.get("labels") or {})
    return subsets


@dataclass(frozen=True)
class _Change:
    """One weight change: where, to what, and what the DestinationRules define."""

    client: KubeClient
    namespace: str
    host: str
    subsets: Subsets
    target: Weights
    known: Mapping[str, Mapping[str, str]]
    allow_gitops: bool

    def read_and_plan(self, name: str) -> tuple[dict[str, Any], RoutePlan]:
        vs = self.client.get_virtual_service(*qualified(self.namespace, name))
        ensure_not_gitops_owned(vs, allowed=self.allow_gitops)
        plan = plan_weights(
            vs, self.host, self.namespace, self.target,
            subsets=self.subsets, defined_subsets=self.known,
        )  # fmt: skip
        return vs, plan


@dataclass(frozen=True)
class WeightsPlan:
    before: Weights  # the split the first VirtualService has
    changes: tuple[ObjectChange, ...]  # every VirtualService, as read and as it would be


def route_change(namespace: str, name: str, vs: Mapping[str, Any],
                 http: list[Route] | None) -> ObjectChange:
    """A VirtualService as read and as the write of ``http`` leaves it (``None``: no write).
    ``patch_virtual_service_route`` sends this ``spec.http`` as a merge patch."""
    vs_ns, vs_name = qualified(namespace, name)
    patch = {} if http is None else {"spec": {"http": http}}
    return ObjectChange.patched("VirtualService", vs_ns, vs_name, vs, patch)


def plan_split(
    client: KubeClient,
    namespace: str,
    vs_names: Sequence[str],
    host: str,
    subsets: Subsets,
    target: Weights,
    *,
    allow_gitops: bool = False,
    app_label: str = "app",
) -> WeightsPlan:
    """Every check set_weights makes and what it would write (the same read and plan), writing
    nothing: a dry run's plan, an approval request's, and every preflight."""
    _, plans = _checked(client, namespace, vs_names, host, subsets, target, allow_gitops,
                        app_label)
    return WeightsPlan(plans[vs_names[0]][1].before, tuple(
        route_change(namespace, name, vs, plan.http if plan.changes_anything else None)
        for name, (vs, plan) in plans.items()))


def preflight(
    client: KubeClient,
    namespace: str,
    vs_names: Sequence[str],
    host: str,
    subsets: Subsets,
    target: Weights,
    *,
    allow_gitops: bool = False,
    app_label: str = "app",
) -> Weights:
    """Every check set_weights makes, without writing; returns the current split (``before``)."""
    return plan_split(client, namespace, vs_names, host, subsets, target,
                      allow_gitops=allow_gitops, app_label=app_label).before


def set_weights(
    client: KubeClient,
    namespace: str,
    vs_names: Sequence[str],
    host: str,
    subsets: Subsets,
    target: Weights,
    *,
    max_attempts: int = 5,
    should_continue: Callable[[], bool] = _always,
    allow_gitops: bool = False,
    app_label: str = "app",
    backoff: float = 0.05,
    remember_before: Callable[[Weights], Weights] | None = None,
) -> tuple[Weights, Weights]:
    """Set ``target`` on every VirtualService in ``vs_names``; returns (before, after).

    ``remember_before`` keeps the split read by a request's first attempt: a retry after a
    write that landed but was not acknowledged (a timeout) reads the new split, and must still
    report what it was before.

    A name is looked up in ``namespace`` (the service's) unless written ``other-namespace/name``
    (e.g. an ingress-gateway VirtualService in istio-system, which must use the FQDN host).
    ``before`` is the split the first VirtualService had. Raises Refused when traffic would go to
    a canary subset without ready pods, GitOpsOwned, MeshInvalid, MeshNotFound, MeshUnavailable,
    MeshConflict (still conflicting after ``max_attempts``) or Abandoned.
    """
    change, plans = _checked(client, namespace, vs_names, host, subsets, target, allow_gitops,
                             app_label)
    before = plans[vs_names[0]][1].before
    if remember_before is not None:
        before = remember_before(before)
    for name in vs_names:
        vs_ns, vs_name = qualified(namespace, name)
        vs, plan = plans[name]
        for attempt in range(1, max_attempts + 1):
            if not plan.changes_anything:
                break
            if not should_continue():  # checked before every write, not only after a 409
                raise Abandoned(f"stopped before writing VirtualService {vs_ns}/{vs_name}: the "
                                f"rollout of {host} no longer wants {target}")
            try:
                rv = resource_version(vs, f"VirtualService {vs_ns}/{vs_name}")
                client.patch_virtual_service_route(vs_ns, vs_name, plan.http, rv)
                break
            except MeshUnavailable:
                if not _landed(change, name, rv):
                    raise
                break
            except MeshConflict:
                if attempt == max_attempts:
                    raise
                # The rollout is asked again before the retried write, after the re-read.
                time.sleep(backoff * attempt)  # short: others are writing the same object now
                vs, plan = change.read_and_plan(name)
    return before, target


def _landed(change: _Change, name: str, written_over: str) -> bool:
    """Whether a write answered 5xx or not at all landed after all: the API server may commit
    it and lose the answer (a proxy's timeout, a dropped connection). Read back at once: the
    object changed since ``written_over`` (the resourceVersion the write carried) and shows the
    target now. A read that fails too tells nothing: the write's own error stands."""
    try:
        vs, plan = change.read_and_plan(name)
        return not plan.changes_anything \
            and resource_version(vs, f"VirtualService {name}") != written_over
    except MeshbotError:
        return False


def _checked(client: KubeClient, namespace: str, vs_names: Sequence[str], host: str,
             subsets: Subsets, target: Weights, allow_gitops: bool,
             app_label: str) -> tuple[_Change, dict[str, tuple[dict[str, Any], RoutePlan]]]:
    """Read and plan every VirtualService, and refuse traffic to a canary without ready pods."""
    change, plans = _prepare(client, namespace, vs_names, host, subsets, target, allow_gitops)
    if target.canary:
        ensure_ready_canary(change.client, change.namespace, change.host,
                            change.subsets.canary, change.known, app_label)
    return change, plans


def _prepare(
    client: KubeClient,
    namespace: str,
    vs_names: Sequence[str],
    host: str,
    subsets: Subsets,
    target: Weights,
    allow_gitops: bool,
) -> tuple[_Change, dict[str, tuple[dict[str, Any], RoutePlan]]]:
    if not vs_names:
        raise ValueError("a service needs at least one VirtualService name")
    known = defined_subsets(client, namespace, host)
    change = _Change(client, namespace, host, subsets, target, known, allow_gitops)
    return change, {name: change.read_and_plan(name) for name in vs_names}


def qualified(namespace: str, name: str) -> tuple[str, str]:
    """(namespace, name) of a VirtualService named ``name`` or ``other-namespace/name``."""
    vs_ns, _, vs_name = name.rpartition("/")
    return vs_ns or namespace, vs_name


def live_weights(client: KubeClient, namespace: str, vs_name: str, host: str,
                 subsets: Subsets) -> Weights:
    """The split the VirtualService shows now."""
    vs = client.get_virtual_service(*qualified(namespace, vs_name))
    return read_weights(vs, host, namespace, subsets)


def ensure_ready_canary(client: KubeClient, namespace: str, host: str, subset: str,
                        known: Mapping[str, Mapping[str, str]], app_label: str = "app") -> None:
    """Refused unless the subset's pods (its DestinationRule labels) have one ready: no request,
    weighted, header-routed or mirrored, goes to a canary that cannot answer it."""
    labels = {app_label: host, **known.get(subset, {})}
    if client.count_ready_pods(namespace, labels) == 0:
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        raise Refused(traffic_text.no_ready_canary(host, subset, selector, namespace))
