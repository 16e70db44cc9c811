"""Where the traffic generator learns how each service's traffic is split.

A weight source is any callable returning {(service, namespace): Split}. Two are here: fixed
weights that tests set by hand, and the live VirtualService weights read through the official
Kubernetes client — so a weight meshbot writes changes the metrics Prometheus sees, as in a mesh.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from playground.traffic_model import ServiceKey, Split

WeightSource = Callable[[], Mapping[ServiceKey, Split]]


def _check(stable: int, canary: int) -> None:
    if stable < 0 or canary < 0 or stable + canary != 100:
        raise ValueError(f"weights must be non-negative and sum to 100: {stable}/{canary}")


class StaticWeights:
    """Weights set by hand: {(service, namespace): (stable, canary)}; thread-safe."""

    def __init__(
        self,
        weights: Mapping[ServiceKey, tuple[int, int]] | None = None,
        *,
        subsets: tuple[str, str] = ("stable", "canary"),
        versions: tuple[str, str] = ("v1", "v2"),
    ) -> None:
        self.subsets = subsets
        self.versions = dict(zip(subsets, versions, strict=True))
        self._lock = threading.Lock()
        self._weights: dict[ServiceKey, tuple[int, int]] = {}
        self.replace(weights or {})

    def replace(self, weights: Mapping[ServiceKey, tuple[int, int]]) -> None:
        """Exactly these services, at these weights."""
        for stable, canary in weights.values():
            _check(stable, canary)
        with self._lock:
            self._weights = dict(weights)

    def set(self, service: str, namespace: str, stable: int, canary: int) -> None:
        _check(stable, canary)
        with self._lock:
            self._weights[(service, namespace)] = (stable, canary)

    def remove(self, service: str, namespace: str) -> None:
        with self._lock:
            self._weights.pop((service, namespace), None)

    def __call__(self) -> dict[ServiceKey, Split]:
        with self._lock:
            current = dict(self._weights)
        return {
            key: Split(dict(zip(self.subsets, pair, strict=True)), self.versions)
            for key, pair in current.items()
        }


def _short_host(host: str) -> str:
    # "payment-service", "payment-service.production" and the FQDN all name the same service.
    return host.split(".", 1)[0]


def managed_route(spec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The route meshbot manages: the first http route without a match."""
    for route in spec.get("http") or []:
        if not route.get("match"):
            return dict(route)
    return None


def _route_weights(route: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """{service: {subset: weight}} from a route's destinations."""
    destinations = route.get("route") or []
    by_service: dict[str, dict[str, int]] = {}
    for dest in destinations:
        target = dest.get("destination") or {}
        host = target.get("host")
        if not host:
            continue
        # Istio sends everything to a lone destination whatever its weight says (or omits).
        weight = 100 if len(destinations) == 1 else int(dest.get("weight") or 0)
        subsets = by_service.setdefault(_short_host(host), {})
        subset = str(target.get("subset") or "")
        subsets[subset] = subsets.get(subset, 0) + weight
    return by_service


def _is_mesh_bound(vs: Mapping[str, Any]) -> bool:
    gateways = (vs.get("spec") or {}).get("gateways") or []
    return not gateways or "mesh" in gateways


class VirtualServiceWeights:
    """Live weights from the VirtualServices (and subset versions from the DestinationRules)
    in the given namespaces: two LIST calls per namespace per poll.

    A service's VirtualService is the one named after it, else one bound to the mesh (not only to
    a gateway): the weights of an ingress-gateway VirtualService do not steer in-mesh traffic.
    """

    def __init__(
        self,
        api: CustomObjectsApi,
        namespaces: Iterable[str],
        *,
        group: str = "networking.istio.io",
        version: str = "v1beta1",
        version_label: str = "version",
    ) -> None:
        self.api = api
        self.namespaces = tuple(namespaces)
        self.group = group
        self.version = version
        self.version_label = version_label

    def _list(self, namespace: str, plural: str) -> list[dict[str, Any]]:
        try:
            answer = cast(
                dict[str, Any],
                self.api.list_namespaced_custom_object(self.group, self.version, namespace, plural),
            )
        except ApiException as exc:
            if exc.status == 404:  # no such namespace or CRD: nothing routed there
                return []
            raise
        return list(answer.get("items") or [])

    def _subset_versions(self, namespace: str) -> dict[str, dict[str, str]]:
        versions: dict[str, dict[str, str]] = {}
        for dr in self._list(namespace, "destinationrules"):
            spec = dr.get("spec") or {}
            host = spec.get("host")
            if not host:
                continue
            subsets = versions.setdefault(_short_host(host), {})
            for subset in spec.get("subsets") or []:
                labels = subset.get("labels") or {}
                subsets[subset["name"]] = str(labels.get(self.version_label, subset["name"]))
        return versions

    def __call__(self) -> dict[ServiceKey, Split]:
        splits: dict[ServiceKey, Split] = {}
        for namespace in self.namespaces:
            versions = self._subset_versions(namespace)
            chosen: dict[str, tuple[bool, dict[str, int]]] = {}
            for vs in self._list(namespace, "virtualservices"):
                if not _is_mesh_bound(vs):
                    continue
                route = managed_route(vs.get("spec") or {})
                if route is None:
                    continue
                named = (vs.get("metadata") or {}).get("name")
                for service, weights in _route_weights(route).items():
                    by_name = named == service
                    if service not in chosen or (by_name and not chosen[service][0]):
                        chosen[service] = (by_name, weights)
            for service, (_, weights) in chosen.items():
                known = versions.get(service, {})
                subset_versions = {s: known.get(s, s or "unknown") for s in weights}
                splits[(service, namespace)] = Split(weights, subset_versions)
        return splits
