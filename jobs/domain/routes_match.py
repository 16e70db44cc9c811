"""Header routes and mirroring on a service's VirtualService: the plan, never the write. Pure.

meshbot owns two things here, beside the weights ``jobs.routes`` plans:

- one header route, named ``meshbot-ab``, placed just before the managed route: requests whose
  header matches exactly go to the canary subset (the runbook's ``canary: "true"`` route);
- the ``mirror`` and ``mirrorPercentage`` fields of the managed route.

Every other route and field is returned exactly as found. A plan is the complete new
``spec.http`` list, or ``None`` when the object already is as asked (nothing to write).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobs.domain.routes import Route, find_managed_route

AB_ROUTE = "meshbot-ab"
MIRROR_FIELDS = ("mirror", "mirrorPercentage")


@dataclass(frozen=True)
class HeaderMatch:
    """An exact match on one request header. Istio requires lower-case header names."""

    name: str
    value: str

    def __post_init__(self) -> None:
        if self.name != self.name.lower():
            raise ValueError(f"header names in Istio match rules are lower-case, not {self.name!r}")

    def __str__(self) -> str:
        return f"{self.name}: {self.value}"


def _http(vs: Mapping[str, Any]) -> list[Route]:
    return copy.deepcopy(list((vs.get("spec") or {}).get("http") or []))


def _ab_index(http: list[Route]) -> int | None:
    return next((i for i, route in enumerate(http) if route.get("name") == AB_ROUTE), None)


def managed_host(vs: Mapping[str, Any], service: str, namespace: str) -> str:
    """The host the managed route names (short, or the FQDN in another namespace's object)."""
    route = vs["spec"]["http"][find_managed_route(vs, service, namespace)]
    return str(route["route"][0]["destination"]["host"])


def current_header(vs: Mapping[str, Any]) -> HeaderMatch | None:
    """The header meshbot's route matches on, if the object has that route."""
    http = _http(vs)
    index = _ab_index(http)
    if index is None:
        return None
    for match in http[index].get("match") or []:
        for name, rule in (match.get("headers") or {}).items():
            if isinstance(rule, dict) and "exact" in rule:
                return HeaderMatch(str(name), str(rule["exact"]))
    return None


def plan_header_route(
    vs: Mapping[str, Any], service: str, namespace: str, header: HeaderMatch, canary_subset: str
) -> list[Route] | None:
    """``spec.http`` with meshbot's header route (replacing a previous one) just before the
    managed route; MeshInvalid when there is no managed route to put it before."""
    http = _http(vs)
    host = managed_host(vs, service, namespace)
    wanted: Route = {
        "name": AB_ROUTE,
        "match": [{"headers": {header.name: {"exact": header.value}}}],
        "route": [{"destination": {"host": host, "subset": canary_subset}}],
    }
    old = _ab_index(http)
    if old is not None:
        del http[old]
    # Found in the list without meshbot's old route: removing it may have moved the index.
    index = find_managed_route({**vs, "spec": {**vs["spec"], "http": http}}, service, namespace)
    http.insert(index, wanted)
    return None if http == _http(vs) else http


def plan_header_route_off(vs: Mapping[str, Any]) -> list[Route] | None:
    """``spec.http`` without meshbot's header route; None when it has none."""
    http = _http(vs)
    index = _ab_index(http)
    if index is None:
        return None
    del http[index]
    return http


def current_mirror(vs: Mapping[str, Any], service: str, namespace: str) -> float | None:
    """The share of traffic the managed route mirrors (100 when no percentage is given), or
    None when it mirrors nothing."""
    route = vs["spec"]["http"][find_managed_route(vs, service, namespace)]
    if "mirror" not in route:
        return None
    return float((route.get("mirrorPercentage") or {}).get("value", 100.0))


def plan_mirror(
    vs: Mapping[str, Any], service: str, namespace: str, percent: float, canary_subset: str
) -> list[Route] | None:
    """``spec.http`` whose managed route mirrors ``percent`` of its traffic to the canary."""
    http = _http(vs)
    route = http[find_managed_route(vs, service, namespace)]
    mirror = {"host": managed_host(vs, service, namespace), "subset": canary_subset}
    share = {"value": float(percent)}
    if route.get("mirror") == mirror and route.get("mirrorPercentage") == share:
        return None
    route["mirror"], route["mirrorPercentage"] = mirror, share
    return http


def plan_mirror_off(vs: Mapping[str, Any], service: str, namespace: str) -> list[Route] | None:
    """``spec.http`` whose managed route mirrors nothing; None when it mirrors nothing."""
    http = _http(vs)
    route = http[find_managed_route(vs, service, namespace)]
    if not any(field in route for field in MIRROR_FIELDS):
        return None
    for field in MIRROR_FIELDS:
        route.pop(field, None)
    return http
