"""The bodies `/mesh migrate` writes, built from what it read: the plan (a dry run) and the
steps use the same functions, so what a dry run shows is what a run writes. Pure."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

Obj = dict[str, Any]

INJECT = "sidecar.istio.io/inject"
INJECTION_LABEL = "istio-injection"
REVISION_LABEL = "istio.io/rev"
GREEN = "green"
BLUE = "blue"
MIGRATION_LABEL = "meshbot.io/migration"  # on the green copies: which workflow made them
GREEN_WEIGHT = 10
CANARY_HEADER = "canary"
MUTUAL = "ISTIO_MUTUAL"
MUTUAL_RULE = "default"  # the namespace-wide DestinationRule of the runbook
MUTUAL_HOST = "*.local"
# Set by the API server or by kubectl; a copy must not carry them over.
_NOT_COPIED = frozenset({"resourceVersion", "uid", "creationTimestamp", "generation",
                         "managedFields", "selfLink", "ownerReferences"})
_NOT_COPIED_ANNOTATIONS = frozenset({"deployment.kubernetes.io/revision",
                                     "kubectl.kubernetes.io/last-applied-configuration"})


def name_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name"))


def template(deployment: Mapping[str, Any]) -> Obj:
    return copy.deepcopy(dict((deployment.get("spec") or {}).get("template") or {}))


def template_labels(deployment: Mapping[str, Any]) -> dict[str, str]:
    return dict((template(deployment).get("metadata") or {}).get("labels") or {})


def injected(deployment: Mapping[str, Any]) -> bool:
    meta = template(deployment).get("metadata") or {}
    return str((meta.get("annotations") or {}).get(INJECT, "")).lower() == "true"


def inject_patch() -> Obj:
    """Only the pod template's annotation: the changed template is what rolls the pods."""
    return {"spec": {"template": {"metadata": {"annotations": {INJECT: "true"}}}}}


def with_injection(deployment: Mapping[str, Any]) -> Obj:
    after = copy.deepcopy(dict(deployment))
    meta = after.setdefault("spec", {}).setdefault("template", {}).setdefault("metadata", {})
    meta.setdefault("annotations", {})[INJECT] = "true"
    return after


def merge_patch(before: Any, after: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns ``before`` into ``after``: a key gone is null."""
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return copy.deepcopy(after)
    patch: Obj = {}
    for key in before:
        if key not in after:
            patch[key] = None
    for key, value in after.items():
        if key not in before:
            patch[key] = copy.deepcopy(value)
        elif before[key] != value:
            patch[key] = merge_patch(before[key], value)
    return patch


def undo_patch(current: Mapping[str, Any], saved_template: Mapping[str, Any]) -> Obj:
    """Put back the pod template ``saved_template`` (what `kubectl rollout undo` restores)."""
    return {"spec": {"template": merge_patch(template(current), saved_template)}}


def green_name(name: str) -> str:
    return f"{name}-{GREEN}"


def green_copy(deployment: Mapping[str, Any], version_label: str, workflow: str) -> Obj:
    """The blue Deployment's copy: same pods but labelled ``<version_label>: green`` (its
    selector too, so the two never share pods) and with the sidecar."""
    meta = dict(deployment.get("metadata") or {})
    labels = {**(meta.get("labels") or {}), version_label: GREEN, MIGRATION_LABEL: workflow}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k not in _NOT_COPIED_ANNOTATIONS}
    new_meta: Obj = {k: v for k, v in meta.items()
                     if k not in _NOT_COPIED and k not in ("labels", "annotations")}
    new_meta.update(name=green_name(name_of(deployment)), labels=labels)
    if annotations:
        new_meta["annotations"] = annotations
    spec = copy.deepcopy(dict(deployment.get("spec") or {}))
    selector = spec.setdefault("selector", {}).setdefault("matchLabels", {})
    selector[version_label] = GREEN
    pod_meta = spec.setdefault("template", {}).setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), version_label: GREEN}
    pod_meta.setdefault("annotations", {})[INJECT] = "true"
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": new_meta, "spec": spec}


# --- the DestinationRule's subsets and the VirtualService's routes of a blue-green --------------

def subset_labels(rule: Mapping[str, Any], subset: str) -> dict[str, str] | None:
    for item in (rule.get("spec") or {}).get("subsets") or []:
        if item.get("name") == subset:
            return dict(item.get("labels") or {})
    return None


def with_subsets(subsets: Sequence[Mapping[str, Any]], wanted: Mapping[str, Mapping[str, str]]
                 ) -> list[Obj]:
    """``subsets`` with each of ``wanted`` (name → labels) set, added at the end if new."""
    result = [copy.deepcopy(dict(s)) for s in subsets]
    for name, labels in wanted.items():
        found = next((s for s in result if s.get("name") == name), None)
        if found is None:
            result.append({"name": name, "labels": dict(labels)})
        else:
            found["labels"] = dict(labels)
    return result


def without_subsets(subsets: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[Obj]:
    return [copy.deepcopy(dict(s)) for s in subsets if s.get("name") not in names]


def default_route_index(http: Sequence[Mapping[str, Any]]) -> int | None:
    """The route without a match: the one that carries the weights."""
    return next((i for i, r in enumerate(http) if not r.get("match")), None)


def route_host(http: Sequence[Mapping[str, Any]]) -> str | None:
    index = default_route_index(http)
    if index is None:
        return None
    for destination in http[index].get("route") or []:
        host = (destination.get("destination") or {}).get("host")
        if host:
            return str(host)
    return None


def live_weights(http: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Subset → weight of the default route (a lone destination carries 100)."""
    index = default_route_index(http)
    if index is None:
        return {}
    route = http[index].get("route") or []
    return {str((d.get("destination") or {}).get("subset")): int(d.get("weight", 100))
            for d in route}


def blue_green_http(http: Sequence[Mapping[str, Any]], green_weight: int) -> list[Obj]:
    """The runbook's split: ``canary: true`` requests to green, the rest blue/green by weight.
    Other routes (an A/B match, a mirror) stay as they were, after the header route."""
    index = default_route_index(http)
    host = route_host(http)
    if index is None or host is None:
        raise ValueError("no default route to split")
    result = [copy.deepcopy(dict(r)) for r in http
              if not _is_header_route(r)]
    index = default_route_index(result)
    assert index is not None
    result[index]["route"] = [
        {"destination": {"host": host, "subset": BLUE}, "weight": 100 - green_weight},
        {"destination": {"host": host, "subset": GREEN}, "weight": green_weight},
    ]
    header = {"match": [{"headers": {CANARY_HEADER: {"exact": "true"}}}],
              "route": [{"destination": {"host": host, "subset": GREEN}}]}
    return [header, *result]


def _is_header_route(route: Mapping[str, Any]) -> bool:
    matches = route.get("match") or []
    return any(CANARY_HEADER in (m.get("headers") or {}) for m in matches) and all(
        (d.get("destination") or {}).get("subset") == GREEN for d in route.get("route") or [])


# --- phase 5 -----------------------------------------------------------------------------------

def mutual_rule(namespace: str, group_version: str) -> Obj:
    return {
        "apiVersion": group_version, "kind": "DestinationRule",
        "metadata": {"name": MUTUAL_RULE, "namespace": namespace},
        "spec": {"host": MUTUAL_HOST, "trafficPolicy": {"tls": {"mode": MUTUAL}}},
    }


def peer_authentication(namespace: str, group_version: str, mode: str = "STRICT") -> Obj:
    return {
        "apiVersion": group_version, "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": namespace},
        "spec": {"mtls": {"mode": mode}},
    }


def telemetry_name(namespace: str) -> str:
    return f"{namespace}-telemetry"


def telemetry(namespace: str, metrics: Sequence[str], tracing: Sequence[str],
              access_logging: Sequence[str]) -> Obj:
    spec: Obj = {}
    for key, names in (("metrics", metrics), ("tracing", tracing),
                       ("accessLogging", access_logging)):
        if names:
            spec[key] = [{"providers": [{"name": n} for n in names]}]
    return {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
            "metadata": {"name": telemetry_name(namespace), "namespace": namespace},
            "spec": spec}


def injection_labels(labels: Mapping[str, str]) -> dict[str, str] | None:
    """The label to set for namespace-wide injection, or None: already on, or the namespace
    selects an istiod revision (``istio-injection`` would override ``istio.io/rev``)."""
    if REVISION_LABEL in labels or labels.get(INJECTION_LABEL) == "enabled":
        return None
    return {INJECTION_LABEL: "enabled"}
