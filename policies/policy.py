"""The policy file's root model, the checks that span sections, and role membership."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, PrivateAttr, model_validator

from meshbot.commands import Verb
from meshbot.errors import PolicyError, PolicyProblem
from policies.clusters import choose, unknown_clusters
from policies.fields import DnsLabel, Name, SlackChannel, SlackMember, invalid
from policies.migrate_model import Migrate, Telemetry
from policies.model import (
    Approvals,
    Cluster,
    Defaults,
    Links,
    NamespaceApprovals,
    Section,
    Service,
    Tier,
)
from policies.views import ServiceView, resolve

EVERYONE = "everyone"
VERBS = tuple(verb.value for verb in Verb)


def _known_verb(key: str) -> str:
    if key in VERBS:
        return key
    dashed = key.replace("_", "-")
    if dashed in VERBS:
        raise invalid(f"{key!r} is spelt with a dash here", f"write `{dashed}`, as in the command")
    raise invalid(f"{key!r} is not a /mesh command", f"use one of: {', '.join(VERBS)}")


def _choose(wrong: str, names: Iterable[str], section: str) -> str:
    known = list(names)
    close = difflib.get_close_matches(wrong, known, n=1)
    hint = f"did you mean `{close[0]}`? " if close else ""
    return f"{hint}use one of: {', '.join(known) or '(none defined)'}, or define it under {section}"


PermissionVerb = Annotated[str, AfterValidator(_known_verb)]

# Which commands each approval count gates: a count only matters if someone may run them.
_TIER_COUNT_VERBS = {
    "promote": {Verb.PROMOTE, Verb.CANARY, Verb.BLUEGREEN},
    "emergency": {Verb.EMERGENCY},
    "unlock": {Verb.UNLOCK},
}
_NAMESPACE_COUNT_VERBS = {
    "mtls": Verb.MTLS,
    "inject_namespace": Verb.INJECT_NAMESPACE,
    "restore": Verb.RESTORE,
    "emergency": Verb.EMERGENCY,
    "freeze_off": Verb.FREEZE,
}


class Policy(Section):
    """meshbot's policy: who may run which /mesh command where, and with how many approvals."""

    version: Literal[1] = Field(description="policy format version; always 1")
    roles: dict[Name, list[SlackMember]] = Field(
        default_factory=dict,
        description="named groups of people: Slack user IDs (U…/W…) or user-group IDs (S…)",
    )
    channels: list[SlackChannel] = Field(
        default_factory=list,
        description="channel IDs where commands are accepted; empty: anywhere",
    )
    defaults: Defaults = Field(description="settings every service inherits")
    approvals: Approvals = Field(
        default_factory=Approvals, description="how approval requests are answered"
    )
    tiers: dict[Name, Tier] = Field(
        default_factory=dict, description="service tiers and the approvals each needs"
    )
    namespace_approvals: NamespaceApprovals = Field(
        default_factory=NamespaceApprovals,
        description="approvals for namespace-wide actions (mtls, inject-namespace, restore, "
        "emergency, freeze off)",
    )
    permissions: dict[PermissionVerb, list[Name]] = Field(
        default_factory=dict,
        description="command (as typed after /mesh, e.g. inject-namespace) -> roles that may "
        "run it, or `everyone`; a command not listed is denied to everyone",
    )
    approve: list[Name] = Field(
        default_factory=list, description="roles whose members may approve requests"
    )
    services: dict[DnsLabel, Service] = Field(
        default_factory=dict, description="the services meshbot may act on, by name"
    )
    links: Links = Field(
        default_factory=Links,
        description="URL templates of Grafana, Kiali, Jaeger and Loki for the threads",
    )
    gitops_allowed: bool = Field(
        False,
        description="allow changing objects owned by Argo CD or Flux (they would revert the "
        "change); a service may override it",
    )
    clusters: dict[Name, Cluster] = Field(
        default_factory=dict,
        description="the Kubernetes clusters meshbot drives, by name; empty: the one it "
        "reaches through its service account or KUBECONFIG",
    )

    migrate: Migrate = Field(
        default_factory=Migrate,
        description="how /mesh migrate watches the services it moves onto the mesh",
    )
    telemetry: Telemetry = Field(
        default_factory=Telemetry,
        description="the Telemetry resource /mesh migrate writes in a namespace it finalizes",
    )

    _views: dict[str, ServiceView] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        problems = self._cross_problems()
        if problems:
            raise PolicyError(problems)
        for name, service in self.services.items():
            tier = self.tiers[service.tier]
            self._views[name] = resolve(
                name, service, self.defaults, tier.approvals, self.gitops_allowed,
                tuple(service.clusters or self.clusters),
            )
        return self

    def _cross_problems(self) -> list[PolicyProblem]:
        problems: list[PolicyProblem] = []
        roles = ", ".join(self.roles) or "(none defined)"
        if EVERYONE in self.roles:
            problems.append(
                PolicyProblem(
                    f"roles.{EVERYONE}",
                    "`everyone` is a keyword, not a role name",
                    "rename the role; write `everyone` in permissions to mean everybody",
                )
            )
        for name, service in self.services.items():
            if service.tier not in self.tiers:
                problems.append(
                    PolicyProblem(
                        f"services.{name}.tier",
                        f"tier `{service.tier}` is not defined",
                        _choose(service.tier, self.tiers, "tiers"),
                    )
                )
        for verb, entries in self.permissions.items():
            for index, entry in enumerate(entries):
                if entry != EVERYONE and entry not in self.roles:
                    problems.append(
                        PolicyProblem(
                            f"permissions.{verb}[{index}]",
                            f"role `{entry}` is not defined",
                            _choose(entry, [*self.roles, EVERYONE], "roles"),
                        )
                    )
        for index, entry in enumerate(self.approve):
            if entry == EVERYONE:
                problems.append(
                    PolicyProblem(
                        f"approve[{index}]",
                        "`everyone` cannot approve: an approval must come from a named person",
                        f"list the roles whose members may approve ({roles})",
                    )
                )
            elif entry not in self.roles:
                problems.append(
                    PolicyProblem(
                        f"approve[{index}]",
                        f"role `{entry}` is not defined",
                        _choose(entry, self.roles, "roles"),
                    )
                )
        problems.extend(self._approver_problems())
        problems.extend(unknown_clusters(self.services, self.clusters))
        return problems

    def _approval_counts(self) -> Iterable[tuple[str, int]]:
        """(path, count) of every approval count whose command someone may run."""
        for name, tier in self.tiers.items():
            for key, verbs in _TIER_COUNT_VERBS.items():
                if not self.permissions.keys().isdisjoint(verbs):
                    yield f"tiers.{name}.approvals.{key}", getattr(tier.approvals, key)
        for key, verb in _NAMESPACE_COUNT_VERBS.items():
            if verb in self.permissions:
                yield f"namespace_approvals.{key}", getattr(self.namespace_approvals, key)

    def _approver_problems(self) -> list[PolicyProblem]:
        approvers = self.members(self.approve)
        # A user group (S…) may hold any number of people; only a plain list can be counted.
        countable = not any(member.startswith("S") for member in approvers)
        problems = []
        for path, count in self._approval_counts():
            if count > 0 and not approvers:
                problems.append(
                    PolicyProblem(
                        path,
                        f"{count} approval(s) required but `approve` names nobody",
                        "list approver roles under `approve`, or set this count to 0",
                    )
                )
            elif countable and count > len(approvers):
                problems.append(
                    PolicyProblem(
                        path,
                        f"{count} approvals required but only {len(approvers)} people may "
                        f"approve, so such a request could never pass",
                        "add approvers (or a user group) to the approve roles, or lower the count",
                    )
                )
        return problems

    def service(self, name: str) -> ServiceView | None:
        """The service with its defaults merged in, or None when the policy does not list it."""
        return self._views.get(name)

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.services))

    def members(self, roles: Iterable[str]) -> tuple[str, ...]:
        """The user and group IDs of ``roles``, each once, in policy order."""
        seen: dict[str, None] = {}
        for role in roles:
            for member in self.roles.get(role, []):
                seen.setdefault(member, None)
        return tuple(seen)

    def in_roles(self, user: str, user_groups: frozenset[str], roles: Iterable[str]) -> bool:
        """True when ``user`` (or one of their user groups) belongs to one of ``roles``."""
        names = list(roles)
        if EVERYONE in names:
            return True
        members = set(self.members(names))
        return user in members or not members.isdisjoint(user_groups)

    def namespace_tiers(self, namespace: str) -> tuple[Tier, ...]:
        """The tiers of the services that live in ``namespace``."""
        return tuple(
            self.tiers[view.tier] for view in self._views.values() if view.namespace == namespace
        )

    def cluster_for(self, verb: Verb, target: str | None,
                    given: str | None) -> tuple[str | None, str | None]:
        """(the cluster the command means, None), or (None, why it is refused)."""
        services = {name: view.clusters for name, view in self._views.items()}
        namespaces = {name: view.namespace for name, view in self._views.items()}
        return choose(self.clusters, services, namespaces, verb, target, given)

    @property
    def cluster_names(self) -> tuple[str, ...]:
        return tuple(self.clusters)
