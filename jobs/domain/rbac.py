"""The Kubernetes permissions each meshbot operation uses — one table, pure data.

The Helm chart's Roles and ClusterRole are written from this table and a test renders the
chart and compares its rules with :func:`rules_by_scope`, so the commands and the chart cannot
drift apart. Adding a Kubernetes call to a job means adding its row here first.

Scopes:

- ``namespaced``: one Role per namespace meshbot manages (the chart's ``rbac.namespaces``);
- ``istio-system``: a read-only Role in Istio's control-plane namespace (``readiness``);
- ``cluster``: the one ClusterRole, for the cluster-scoped resources only (Namespaces, Nodes).
  Its ``namespaces`` rule is narrowed with ``resourceNames`` to the managed namespaces
  (:data:`NAMED_BY_MANAGED_NAMESPACES`), so meshbot cannot relabel a namespace it does not manage.

Never Secrets, never wildcards, never ``deletecollection``/``escalate``/``bind``: a test checks it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

Scope = Literal["namespaced", "cluster", "istio-system"]
SCOPES: tuple[Scope, ...] = ("namespaced", "istio-system", "cluster")

# The order verbs are written in: reads first, then writes by growing danger. Rules list verbs
# in this order (not alphabetically) because that is how people read a Role.
VERB_ORDER: tuple[str, ...] = ("get", "list", "watch", "create", "update", "patch", "delete")

CORE = ""
APPS = "apps"
POLICY = "policy"
AUTOSCALING = "autoscaling"
NETWORKING = "networking.istio.io"
SECURITY = "security.istio.io"
TELEMETRY = "telemetry.istio.io"

# Cluster-scoped resources whose rule the chart limits, by resourceNames, to the namespaces
# the values name.
NAMED_BY_MANAGED_NAMESPACES: frozenset[str] = frozenset({"namespaces"})


@dataclass(frozen=True)
class Permission:
    """One row: what ``operation`` does to ``resource`` of ``api_group``, and where."""

    operation: str
    api_group: str
    resource: str
    verbs: frozenset[str]
    scope: Scope = "namespaced"


@dataclass(frozen=True)
class Rule:
    """One merged RBAC PolicyRule (a single apiGroup and resource; verbs in VERB_ORDER)."""

    api_group: str
    resource: str
    verbs: tuple[str, ...]

    def as_k8s(self) -> dict[str, list[str]]:
        """The rule as it appears in a rendered Role's ``rules`` list."""
        return {
            "apiGroups": [self.api_group],
            "resources": [self.resource],
            "verbs": list(self.verbs),
        }


def _p(
    operation: str, api_group: str, resource: str, verbs: str, scope: Scope = "namespaced"
) -> Permission:
    return Permission(operation, api_group, resource, frozenset(verbs.split()), scope)


# Reading both objects of a traffic split and the pods behind the canary subset is what every
# traffic verb does first (the canary subset must have ready pods before any weight moves).
_TRAFFIC_READ = "get list watch"

PERMISSIONS: tuple[Permission, ...] = (
    # status: the live weights and the pods of each subset.
    _p("status", NETWORKING, "virtualservices", _TRAFFIC_READ),
    _p("status", NETWORKING, "destinationrules", _TRAFFIC_READ),
    _p("status", CORE, "pods", "get list"),
    # Traffic verbs write only the weights/mirror/match of the managed route: a patch of the
    # VirtualService. The DestinationRule is read to check the subsets exist.
    *(
        row
        for verb in ("canary", "rollout", "promote", "rollback", "ab", "mirror", "bluegreen")
        for row in (
            _p(verb, NETWORKING, "virtualservices", _TRAFFIC_READ + " patch"),
            _p(verb, NETWORKING, "destinationrules", _TRAFFIC_READ),
            _p(verb, CORE, "pods", "get list"),
        )
    ),
    # backup: every mesh object of the namespace the runbook saves, except Secrets (cacerts
    # stays out of meshbot's reach on purpose).
    _p("backup", NETWORKING, "virtualservices", "get list"),
    _p("backup", NETWORKING, "destinationrules", "get list"),
    _p("backup", NETWORKING, "gateways", "get list"),
    _p("backup", SECURITY, "peerauthentications", "get list"),
    _p("backup", SECURITY, "authorizationpolicies", "get list"),
    _p("backup", CORE, "namespaces", "get", "cluster"),  # refuse a namespace that does not exist
    # restore: create what is missing, update/patch what exists (apply semantics). meshbot limits
    # restore to the three kinds meshbot itself changes; Gateways and AuthorizationPolicies are
    # backed up for the record but restored by a human.
    _p("restore", NETWORKING, "virtualservices", "get list create update patch"),
    _p("restore", NETWORKING, "destinationrules", "get list create update patch"),
    _p("restore", SECURITY, "peerauthentications", "get list create update patch"),
    # The restore's diff also shows the Gateways and AuthorizationPolicies it leaves alone.
    _p("restore", NETWORKING, "gateways", "get list"),
    _p("restore", SECURITY, "authorizationpolicies", "get list"),
    _p("restore", CORE, "namespaces", "get", "cluster"),
    # mtls: the namespace's PeerAuthentication is created the first time, patched afterwards;
    # the namespace is read to refuse meshbot's own and unknown ones.
    _p("mtls", SECURITY, "peerauthentications", "get list create patch"),
    _p("mtls", CORE, "namespaces", "get", "cluster"),
    # STRICT sets ISTIO_MUTUAL on the namespace's DestinationRules (that field only).
    _p("mtls", NETWORKING, "destinationrules", "get list patch"),
    # inject (one service): annotate the pod template, which is also what restarts it.
    _p("inject", APPS, "deployments", "get list patch"),
    _p("inject", CORE, "pods", "get list"),
    # the namespace's injection label decides which services count as injected (tier order).
    _p("inject", CORE, "namespaces", "get", "cluster"),
    # inject-namespace: label the namespace (istio-injection or keep istio.io/rev), then
    # restart its Deployments one at a time within their PDBs.
    _p("inject-namespace", CORE, "namespaces", "get patch", "cluster"),
    _p("inject-namespace", APPS, "deployments", "get list patch"),
    _p("inject-namespace", POLICY, "poddisruptionbudgets", "get list"),
    _p("inject-namespace", CORE, "pods", "get list"),
    # emergency: backup first (same reads), PERMISSIVE PeerAuthentication, drop the injection
    # label, delete the namespace's VirtualServices and DestinationRules one by one (never
    # deletecollection), restart Deployments respecting PDBs.
    _p("emergency", NETWORKING, "virtualservices", "get list delete"),
    _p("emergency", NETWORKING, "destinationrules", "get list delete"),
    _p("emergency", NETWORKING, "gateways", "get list"),
    _p("emergency", SECURITY, "authorizationpolicies", "get list"),
    _p("emergency", SECURITY, "peerauthentications", "get list create patch"),
    _p("emergency", CORE, "namespaces", "get patch", "cluster"),
    _p("emergency", APPS, "deployments", "get list patch"),
    _p("emergency", POLICY, "poddisruptionbudgets", "get list"),
    _p("emergency", CORE, "pods", "get list"),
    # authz: the namespace's AuthorizationPolicies are read to judge what a change would cut,
    # then one is created, patched (meshbot's own, its rule changed) or deleted.
    _p("authz", SECURITY, "authorizationpolicies", "get list create patch delete"),
    _p("authz", CORE, "namespaces", "get", "cluster"),
    # readiness: the control plane's health (istiod replicas, PDBs, HPAs, pods) and the zones
    # the nodes are spread over (node labels).
    _p("readiness", APPS, "deployments", "get list", "istio-system"),
    _p("readiness", POLICY, "poddisruptionbudgets", "get list", "istio-system"),
    _p("readiness", AUTOSCALING, "horizontalpodautoscalers", "get list", "istio-system"),
    _p("readiness", CORE, "pods", "get list", "istio-system"),
    _p("readiness", CORE, "nodes", "get list", "cluster"),
    # migrate: the readiness gate's reads (as readiness); injection and its undo patch the pod
    # template; a blue-green creates the green copy, patches the routes and subsets and, after
    # the cut-over, deletes blue; a backup first (its reads); phase 5 labels the namespace,
    # makes its PeerAuthentication STRICT, its DestinationRules ISTIO_MUTUAL (the
    # namespace-wide one created) and writes its Telemetry.
    _p("migrate", APPS, "deployments", "get list create patch delete"),
    _p("migrate", CORE, "pods", "get list"),
    _p("migrate", CORE, "namespaces", "get patch", "cluster"),
    _p("migrate", NETWORKING, "virtualservices", "get list patch"),
    _p("migrate", NETWORKING, "destinationrules", "get list create patch"),
    _p("migrate", NETWORKING, "gateways", "get list"),
    _p("migrate", SECURITY, "peerauthentications", "get list create patch"),
    _p("migrate", SECURITY, "authorizationpolicies", "get list"),
    _p("migrate", TELEMETRY, "telemetries", "get list create patch"),
    _p("migrate", APPS, "deployments", "get list", "istio-system"),
    _p("migrate", POLICY, "poddisruptionbudgets", "get list", "istio-system"),
    _p("migrate", AUTOSCALING, "horizontalpodautoscalers", "get list", "istio-system"),
    _p("migrate", CORE, "pods", "get list", "istio-system"),
    _p("migrate", CORE, "nodes", "get list", "cluster"),
)


def permissions_for(operation: str) -> tuple[Permission, ...]:
    """The rows of one operation (what its job may call), in table order."""
    return tuple(row for row in PERMISSIONS if row.operation == operation)


def rules_by_scope(
    permissions: tuple[Permission, ...] = PERMISSIONS,
) -> dict[Scope, tuple[Rule, ...]]:
    """Merge the table into RBAC rules: one rule per (apiGroup, resource) and scope.

    Verbs are the union over operations, in :data:`VERB_ORDER`; rules are sorted by
    (apiGroup, resource). Every scope is present, possibly empty.
    """
    merged: dict[Scope, dict[tuple[str, str], set[str]]] = {
        scope: defaultdict(set) for scope in SCOPES
    }
    for row in permissions:
        unknown = row.verbs - set(VERB_ORDER)
        if unknown:
            raise ValueError(f"{row.operation}: verbs {sorted(unknown)} are not allowed")
        merged[row.scope][(row.api_group, row.resource)] |= row.verbs
    return {
        scope: tuple(
            Rule(group, resource, tuple(v for v in VERB_ORDER if v in verbs))
            for (group, resource), verbs in sorted(merged[scope].items())
        )
        for scope in SCOPES
    }
