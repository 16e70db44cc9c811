"""Which cluster a command means, when the policy names several.

A service runs in the clusters its policy entry lists (default: all of them); a namespace in
the clusters of its services. A command on a target that runs in one cluster goes there; one
that runs in several must say ``cluster=<name>``, and is refused with the list otherwise.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from meshbot.commands import TargetKind, Verb
from meshbot.errors import PolicyProblem
from meshbot.verbs import VERBS
from policies.model import Cluster, Service

# State meshbot keeps once, whatever the cluster: the change freeze and the help text.
CLUSTERLESS = frozenset({Verb.HELP, Verb.FREEZE})


def unknown_clusters(services: Mapping[str, Service],
                     clusters: Mapping[str, Cluster]) -> list[PolicyProblem]:
    problems = []
    for name, service in services.items():
        for index, cluster in enumerate(service.clusters or ()):
            if cluster not in clusters:
                close = difflib.get_close_matches(cluster, list(clusters), n=1)
                hint = f"did you mean `{close[0]}`? " if close else ""
                problems.append(PolicyProblem(
                    f"services.{name}.clusters[{index}]", f"cluster `{cluster}` is not defined",
                    f"{hint}use one of: {', '.join(clusters) or '(none defined)'}, or define "
                    "it under clusters"))
    return problems


def _and(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def candidates(clusters: Mapping[str, Cluster], services: Mapping[str, tuple[str, ...]],
               namespaces: Mapping[str, str], verb: Verb, target: str | None
               ) -> tuple[str, tuple[str, ...]]:
    """(what the target is called, the clusters it may mean). ``services`` maps each service
    to its clusters, ``namespaces`` each service to its namespace."""
    everywhere = tuple(clusters)
    kind = VERBS[verb].target
    if target and kind is TargetKind.SERVICE and target in services:
        return target, services[target] or everywhere
    if target and kind is TargetKind.NAMESPACE:
        found = tuple(dict.fromkeys(c for s, ns in namespaces.items() if ns == target
                                    for c in services[s] or everywhere))
        return f"namespace {target}", found or everywhere
    return f"`/mesh {verb.value}`", everywhere


def choose(clusters: Mapping[str, Cluster], services: Mapping[str, tuple[str, ...]],
           namespaces: Mapping[str, str], verb: Verb, target: str | None,
           given: str | None) -> tuple[str | None, str | None]:
    """(the cluster, None) or (None, why the command is refused)."""
    if verb in CLUSTERLESS:
        if given is not None:
            return None, f"`/mesh {verb.value}` applies to every cluster: drop cluster={given}."
        return None, None
    if not clusters:
        if given is not None:
            return None, (f"the policy names no clusters, so cluster={given} means nothing: "
                          "drop it (or define clusters in the policy).")
        return None, None
    what, where = candidates(clusters, services, namespaces, verb, target)
    if given is not None:
        if given not in where:
            return None, f"{what} does not run in cluster {given}; it runs in {_and(where)}."
        return given, None
    if len(where) == 1:
        return where[0], None
    return None, f"{what} runs in {_and(where)}: add cluster=… (e.g. cluster={where[0]})."
