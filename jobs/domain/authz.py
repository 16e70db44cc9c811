"""AuthorizationPolicies, the runbook's zero-trust pattern: the bodies meshbot writes and what a
change would cut. Pure.

Who is admitted follows Istio's ALLOW semantics: a workload that no ALLOW policy selects admits
every caller; once one does, only what some rule of those policies names gets in. A deny-all is
an ALLOW policy with an empty spec (it selects every workload and names nobody). So the first
ALLOW policy on a service cuts its other callers too, and removing a rule can cut its callers:
every change is judged by who is admitted before it and not after. A caller counts as admitted
by a rule whose sources name it, whatever operations or conditions the rule adds (the person
who limited it to GET meant to), and DENY, AUDIT and CUSTOM policies are left out: a deny-all
changes nothing about them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
KIND = "AuthorizationPolicy"
PLURAL = "authorizationpolicies"
MANAGED_BY = "app.kubernetes.io/managed-by"
MESHBOT = "meshbot"
DENY_ALL = "deny-all"
SPIFFE = "spiffe://"
# Prometheus's word for a label Istio could not fill in (plain-text traffic has no principal).
UNKNOWN = frozenset({"", "unknown"})


@dataclass(frozen=True, slots=True, order=True)
class Caller:
    """A source calling ``service``: a principal (``cluster.local/ns/<ns>/sa/<sa>``), or a
    namespace when only that is known."""

    service: str
    source: str

    @property
    def is_principal(self) -> bool:
        return "/" in self.source

    @property
    def namespace(self) -> str:
        """The namespace the source runs in (a principal's ``ns/<ns>`` part)."""
        if not self.is_principal:
            return self.source
        parts = self.source.split("/")
        return parts[parts.index("ns") + 1] if "ns" in parts[:-1] else ""


def is_managed(policy: Mapping[str, Any]) -> bool:
    labels = (policy.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY) == MESHBOT


def name_of(policy: Mapping[str, Any]) -> str:
    return str((policy.get("metadata") or {}).get("name") or "")


def _body(api_version: str, namespace: str, name: str, spec: Obj) -> Obj:
    return {"apiVersion": api_version, "kind": KIND,
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {MANAGED_BY: MESHBOT}},
            "spec": spec}


def deny_all_body(api_version: str, namespace: str) -> Obj:
    return _body(api_version, namespace, DENY_ALL, {})


def allow_name(service: str, sources: Sequence[str]) -> str:
    """One name per (service, callers): asking again for the same callers updates their rule
    (new methods or paths) instead of piling up policies. A DNS-1123 label."""
    readable = "-".join(s.split("/")[-1] for s in sources)
    name = f"allow-{service}-from-{readable}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(",".join(sorted(sources)).encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-')}-{digest}"


def allow_body(api_version: str, namespace: str, service: str, sources: Sequence[str],
               methods: Sequence[str] = (), paths: Sequence[str] = ()) -> Obj:
    """One rule: from the sources, to the operations. Principals and namespaces go in separate
    ``from`` entries: within one source Istio requires every field to match."""
    principals = [s for s in sources if "/" in s]
    namespaces = [s for s in sources if "/" not in s]
    origins: list[Obj] = []
    if principals:
        origins.append({"source": {"principals": principals}})
    if namespaces:
        origins.append({"source": {"namespaces": namespaces}})
    rule: Obj = {"from": origins}
    operation: Obj = {}
    if methods:
        operation["methods"] = list(methods)
    if paths:
        operation["paths"] = list(paths)
    if operation:
        rule["to"] = [{"operation": operation}]
    spec = {"selector": {"matchLabels": {"app": service}}, "action": "ALLOW", "rules": [rule]}
    return _body(api_version, namespace, allow_name(service, sources), spec)


def is_deny_all(policy: Mapping[str, Any]) -> bool:
    """Whether the policy denies every workload of its namespace everything (an empty spec, or
    an ALLOW without selector nor rules)."""
    spec = policy.get("spec") or {}
    return (spec.get("action", "ALLOW") == "ALLOW" and not spec.get("rules")
            and not spec.get("selector") and not spec.get("provider")
            and not spec.get("targetRef") and not spec.get("targetRefs"))


# --- who gets in ------------------------------------------------------------------------------

def _selects(policy: Mapping[str, Any], service: str) -> bool | None:
    """True/False when the selector does/does not pick the service's pods (``app: <service>``);
    None when it names other labels, which pods may or may not carry."""
    spec = policy.get("spec") or {}
    if spec.get("targetRef") or spec.get("targetRefs"):
        return None
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    if not labels:
        return True
    if set(labels) == {"app"}:
        return bool(labels["app"] == service)
    return None if labels.get("app", service) == service else False


def _source_admits(source: Mapping[str, Any], caller: Caller) -> bool:
    if set(source) - {"principals", "namespaces"}:
        return False  # more conditions (IPs, negations): not sure to match, so not counted
    principals = source.get("principals")
    namespaces = source.get("namespaces")
    if principals is not None and not _matches(principals, caller.source, caller.is_principal):
        return False
    return namespaces is None or _matches(namespaces, caller.namespace, True)


def _matches(patterns: Iterable[str], value: str, known: bool) -> bool:
    """Istio's string match: exact, ``prefix*``, ``*suffix`` or ``*``. A caller known only by
    namespace matches no principal pattern but ``*``."""
    for pattern in patterns:
        if pattern == "*":
            return True
        if not known:
            continue
        if pattern.endswith("*") and value.startswith(pattern[:-1]):
            return True
        if pattern.startswith("*") and value.endswith(pattern[1:]):
            return True
        if pattern == value:
            return True
    return False


# How far a caller gets in: not at all, only to some operations (a rule with ``to`` or
# ``when``: other methods and paths are refused), or in full.
NONE, PART, FULL = 0, 1, 2


def _rule_admission(rule: Mapping[str, Any], caller: Caller) -> int:
    origins = rule.get("from")
    if origins and not any(_source_admits(o.get("source") or {}, caller) for o in origins):
        return NONE
    return PART if rule.get("to") or rule.get("when") else FULL


def admission(policies: Sequence[Mapping[str, Any]], caller: Caller) -> int:
    """How far the ALLOW policies of the namespace let ``caller`` reach its service. A policy
    whose selector may or may not pick the service is assumed to pick it and to admit nobody
    (the cautious reading: it could only cut more)."""
    applying = [p for p in policies if (p.get("spec") or {}).get("action", "ALLOW") == "ALLOW"
                and _selects(p, caller.service) is not False]
    if not applying:
        return FULL
    return max((_rule_admission(r, caller) for p in applying if _selects(p, caller.service)
                for r in (p.get("spec") or {}).get("rules") or []), default=NONE)


def admitted(policies: Sequence[Mapping[str, Any]], caller: Caller) -> bool:
    """Whether ``caller`` reaches its service with every method and path."""
    return admission(policies, caller) == FULL


def cut(callers: Iterable[Caller], before: Sequence[Mapping[str, Any]],
        after: Sequence[Mapping[str, Any]], written: Mapping[str, Any] | None = None
        ) -> list[Caller]:
    """The callers that get less far once the namespace's policies are ``after``: shut out, or
    limited to some methods and paths where they had all — except a caller the ``written``
    rule itself names with those limits (that limit is what was asked for)."""
    def asked(caller: Caller, level: int) -> bool:
        return written is not None and level == PART and admission([written], caller) == PART
    return sorted({c for c in callers
                   if (level := admission(after, c)) < admission(before, c)
                   and not asked(c, level)})


def replaced(policies: Sequence[Obj], written: Obj | None, removed: str | None = None
             ) -> list[Obj]:
    """The namespace's policies once ``written`` is created or updated and ``removed`` gone."""
    name = name_of(written) if written is not None else None
    kept = [p for p in policies if name_of(p) not in (name, removed)]
    return kept + ([written] if written is not None else [])


# --- callers from the policy and from Prometheus ---------------------------------------------

def declared_callers(callers_by_service: Mapping[str, Sequence[str]]) -> list[Caller]:
    return [Caller(service, source) for service, sources in callers_by_service.items()
            for source in sources]


def traffic_query(namespace: str, window: str = "1h") -> str:
    """One query: who called each service of ``namespace`` within ``window``, as its sidecar
    saw it.

    ``increase()`` alone misses a young caller: Istio creates a series at its first request, so
    the series' first sample already holds that traffic, and ``increase()`` takes the first
    sample as its baseline. A caller that called a few times and went quiet (a batch job) shows
    a flat series and no increase. So a series that has samples in the window and none in the
    window before it (born within the window: all its count is recent traffic) counts as well.
    ``last_over_time`` rather than the instant value keeps a caller whose pod is already gone.
    The namespace is the destination workload's, as every other query of meshbot's reads it
    and as an AuthorizationPolicy selects (the workloads of its namespace).
    """
    series = (f'istio_requests_total{{reporter="destination",'
              f'destination_workload_namespace="{namespace}"}}')
    return (f'sum by (destination_service_name, source_principal, source_workload_namespace) '
            f'(increase({series}[{window}]) > 0 or (last_over_time({series}[{window}]) > 0 '
            f'unless last_over_time({series}[{window}] offset {window})))')


def observed_callers(series: Iterable[Mapping[str, Any]], services: Iterable[str]
                     ) -> list[Caller]:
    """Callers from the query's series, for the services meshbot knows: the principal when the
    call was mTLS, else the source's namespace; a source Istio could not name is left out."""
    known = set(services)
    found: set[Caller] = set()
    for item in series:
        labels = item.get("metric") or {}
        service = str(labels.get("destination_service_name") or "")
        if service not in known:
            continue
        principal = str(labels.get("source_principal") or "")
        namespace = str(labels.get("source_workload_namespace") or "")
        if principal not in UNKNOWN:
            found.add(Caller(service, principal.removeprefix(SPIFFE)))
        elif namespace not in UNKNOWN:
            found.add(Caller(service, namespace))
    return sorted(found)


# --- the write ---------------------------------------------------------------------------------

def replacing_patch(before: Any, after: Any) -> Any:
    """A JSON merge patch turning ``before`` into ``after``: keys ``after`` lacks are nulled."""
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return after
    patch = {key: None for key in before if key not in after}
    patch.update({key: replacing_patch(before.get(key), value) for key, value in after.items()})
    return patch


def update_patch(live: Mapping[str, Any], body: Mapping[str, Any]) -> Obj:
    """The merge patch that makes ``live`` (meshbot's own policy) carry ``body``'s spec and
    label, conditional on the resourceVersion read; other labels and annotations are kept."""
    meta = live.get("metadata") or {}
    return {"metadata": {"resourceVersion": meta.get("resourceVersion"),
                         "labels": {MANAGED_BY: MESHBOT}},
            "spec": replacing_patch(live.get("spec") or {}, body["spec"])}
