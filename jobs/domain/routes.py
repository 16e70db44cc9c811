"""The route meshbot manages in a VirtualService, its weights, and the plan to change them. Pure.

The managed route is the first ``http`` route without a ``match`` whose destinations are all the
service's host. meshbot changes only the weights of that route (adding the canary destination at
weight 0 when the route names only the stable subset and the DestinationRule defines the canary
one) and leaves every other field as it found it.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshbot.errors import MeshInvalid

Route = dict[str, Any]


@dataclass(frozen=True)
class Weights:
    """Traffic split between the stable and the canary subset, in percent; sums to 100."""

    stable: int
    canary: int

    def __post_init__(self) -> None:
        if not (0 <= self.stable <= 100 and 0 <= self.canary <= 100):
            raise ValueError(f"weights must be within 0..100, got {self}")
        if self.stable + self.canary != 100:
            raise ValueError(f"weights must sum to 100, got {self}")

    @classmethod
    def canary_at(cls, percent: int) -> Weights:
        return cls(stable=100 - percent, canary=percent)

    def __str__(self) -> str:
        return f"stable {self.stable} / canary {self.canary}"


@dataclass(frozen=True)
class Subsets:
    """The DestinationRule subset names playing the stable and the canary role."""

    stable: str = "stable"
    canary: str = "canary"


@dataclass(frozen=True)
class RoutePlan:
    """The weights before and after, and the complete new ``spec.http`` list to write."""

    before: Weights
    after: Weights
    http: list[Route]
    index: int  # of the managed route within ``http``
    added_canary: bool = False

    @property
    def changes_anything(self) -> bool:
        return self.added_canary or self.before != self.after


def host_matches(
    host: str,
    service: str,
    namespace: str,
    vs_namespace: str,
    cluster_domain: str = "cluster.local",
) -> bool:
    """Whether a destination host names the service: the FQDN anywhere, the short name only in
    the service's own namespace (Istio resolves a short name in the VirtualService's namespace)."""
    if host == f"{service}.{namespace}.svc.{cluster_domain}":
        return True
    return host == service and vs_namespace == namespace


def find_managed_route(vs: Mapping[str, Any], service: str, namespace: str) -> int:
    """Index of the managed route in ``spec.http``; MeshInvalid saying what is missing if none."""
    vs_ns = vs.get("metadata", {}).get("namespace", namespace)
    http = vs.get("spec", {}).get("http") or []
    for index, route in enumerate(http):
        destinations = route.get("route") or []
        if route.get("match") or not destinations:
            continue
        if all(
            host_matches(d.get("destination", {}).get("host", ""), service, namespace, vs_ns)
            for d in destinations
        ):
            return index
    raise MeshInvalid(
        f"VirtualService {_name(vs)} has no http route without a match whose destinations are "
        f"host {service} (or {service}.{namespace}.svc.cluster.local): add one, e.g. "
        f"route: [{{destination: {{host: {service}, subset: stable}}, weight: 100}}]"
    )


def read_weights(
    vs: Mapping[str, Any], service: str, namespace: str, subsets: Subsets = Subsets()
) -> Weights:
    """The current split of the managed route. A route naming only the stable subset is 100/0."""
    route = vs["spec"]["http"][find_managed_route(vs, service, namespace)]
    return _weights(vs, route["route"], subsets)


def plan_weights(
    vs: Mapping[str, Any],
    service: str,
    namespace: str,
    target: Weights,
    *,
    defined_subsets: Collection[str],
    subsets: Subsets = Subsets(),
) -> RoutePlan:
    """The new ``spec.http`` that sets the managed route to ``target``, everything else unchanged.

    ``defined_subsets`` are the subset names the service's DestinationRule(s) define: the canary
    destination is added only if its subset is defined, and no traffic goes to an undefined
    canary subset (moving traffic back to stable is never refused).
    """
    http: list[Route] = copy.deepcopy(list(vs["spec"]["http"]))
    index = find_managed_route(vs, service, namespace)
    destinations: list[Route] = http[index]["route"]
    before = _weights(vs, destinations, subsets)
    added = False
    if _subset_names(destinations) == [subsets.stable]:
        if subsets.canary in defined_subsets:
            host = destinations[0]["destination"]["host"]
            destinations.append({"destination": {"host": host, "subset": subsets.canary}})
            added = True
        elif target.canary:
            raise MeshInvalid(
                f"VirtualService {_name(vs)} routes {service} only to subset {subsets.stable!r} "
                f"and no DestinationRule for host {service} defines subset {subsets.canary!r}: "
                f"add subset {subsets.canary!r} (with the canary's version label) to the "
                f"DestinationRule, or a destination with that subset to the route"
            )
    if target.canary and subsets.canary not in defined_subsets:
        raise MeshInvalid(
            f"no DestinationRule for host {service} defines subset {subsets.canary!r}, so "
            f"traffic sent to it would fail: add the subset before shifting {target.canary}% to it"
        )
    if len(destinations) > 1:  # a lone stable destination already takes all traffic: as found
        for destination in destinations:
            subset = destination["destination"]["subset"]
            destination["weight"] = target.stable if subset == subsets.stable else target.canary
    return RoutePlan(before=before, after=target, http=http, index=index, added_canary=added)


def _weights(
    vs: Mapping[str, Any], destinations: Sequence[Mapping[str, Any]], subsets: Subsets
) -> Weights:
    names = _subset_names(destinations)
    expected = f"subsets {subsets.stable!r} and {subsets.canary!r}"
    if len(set(names)) != len(names) or not set(names) <= {subsets.stable, subsets.canary}:
        shown = ", ".join(repr(n) if n else "(no subset)" for n in names)
        raise MeshInvalid(
            f"VirtualService {_name(vs)}: the managed route's destinations name {shown}; "
            f"meshbot needs {expected}, each once"
        )
    if subsets.stable not in names:
        raise MeshInvalid(
            f"VirtualService {_name(vs)}: the managed route has no destination with subset "
            f"{subsets.stable!r} (it names {', '.join(map(repr, names))}); meshbot needs {expected}"
        )
    if len(destinations) == 1:  # Istio sends all traffic to a lone destination, whatever its weight
        return Weights(stable=100, canary=0)
    by_subset = {d["destination"]["subset"]: int(d.get("weight", 0)) for d in destinations}
    stable, canary = by_subset[subsets.stable], by_subset[subsets.canary]
    if stable + canary != 100 or min(stable, canary) < 0:
        raise MeshInvalid(
            f"VirtualService {_name(vs)}: the managed route's weights are stable {stable} / "
            f"canary {canary}, which do not sum to 100"
        )
    return Weights(stable=stable, canary=canary)


def _subset_names(destinations: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(d.get("destination", {}).get("subset") or "") for d in destinations]


def _name(vs: Mapping[str, Any]) -> str:
    meta = vs.get("metadata", {})
    return f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"
