"""The RBAC table: least privilege, and what the runbook commands need (DESIGN "RBAC")."""

from __future__ import annotations

import pytest

from jobs.domain.rbac import (
    PERMISSIONS,
    SCOPES,
    VERB_ORDER,
    Permission,
    Rule,
    permissions_for,
    rules_by_scope,
)
from meshbot.commands import Verb

CLUSTER_SCOPED = {"namespaces", "nodes"}


def granted(operation: str, resource: str) -> set[str]:
    return {v for row in permissions_for(operation) if row.resource == resource for v in row.verbs}


def test_no_wildcards_no_secrets_no_escalation() -> None:
    for row in PERMISSIONS:
        assert "*" not in row.api_group and "*" not in row.resource, row
        assert "*" not in row.verbs, row
        assert row.resource not in {"secrets", "serviceaccounts", "roles", "rolebindings"}, row
        # Only the verbs meshbot's adapters call; never deletecollection, escalate, bind, ...
        assert row.verbs <= set(VERB_ORDER), row
        assert row.verbs, row


def test_every_operation_is_a_command_verb() -> None:
    verbs = {verb.value for verb in Verb}
    assert {row.operation for row in PERMISSIONS} <= verbs


def test_scopes_hold_the_right_kind_of_resource() -> None:
    for row in PERMISSIONS:
        assert row.scope in SCOPES
        # A Role cannot grant cluster-scoped resources and a ClusterRole must not grant
        # namespaced ones cluster-wide: that is the whole point of the per-namespace Roles.
        assert (row.resource in CLUSTER_SCOPED) == (row.scope == "cluster"), row


@pytest.mark.parametrize("verb", ["canary", "rollout", "promote", "rollback", "bluegreen"])
def test_traffic_verbs_read_and_patch_virtualservices(verb: str) -> None:
    assert granted(verb, "virtualservices") == {"get", "list", "watch", "patch"}
    assert granted(verb, "destinationrules") == {"get", "list", "watch"}
    # The canary subset must have ready pods before traffic moves.
    assert granted(verb, "pods") == {"get", "list"}


def test_runbook_operations_have_what_they_need() -> None:
    assert granted("backup", "gateways") == {"get", "list"}
    assert granted("backup", "authorizationpolicies") == {"get", "list"}
    assert {"create", "update"} <= granted("restore", "virtualservices")
    assert {"create", "update"} <= granted("restore", "destinationrules")
    assert {"create", "update"} <= granted("restore", "peerauthentications")
    assert {"create", "patch"} <= granted("mtls", "peerauthentications")
    assert {"create", "patch"} <= granted("emergency", "peerauthentications")
    assert "delete" in granted("emergency", "virtualservices")
    assert "delete" in granted("emergency", "destinationrules")
    for operation in ("inject", "inject-namespace", "emergency"):
        assert "patch" in granted(operation, "deployments"), operation
    for operation in ("inject-namespace", "emergency"):
        assert granted(operation, "namespaces") == {"get", "patch"}
        assert granted(operation, "poddisruptionbudgets") == {"get", "list"}
    readiness = {(row.resource, row.scope) for row in permissions_for("readiness")}
    assert readiness == {
        ("deployments", "istio-system"),
        ("poddisruptionbudgets", "istio-system"),
        ("horizontalpodautoscalers", "istio-system"),
        ("pods", "istio-system"),
        ("nodes", "cluster"),
    }
    assert all(row.verbs == {"get", "list"} for row in permissions_for("readiness"))


def test_rules_by_scope_merges_sorted_and_deduplicated() -> None:
    rules = rules_by_scope()
    assert set(rules) == set(SCOPES)
    for scope, scoped in rules.items():
        keys = [(rule.api_group, rule.resource) for rule in scoped]
        assert keys == sorted(set(keys)), scope
        for rule in scoped:
            assert list(rule.verbs) == [v for v in VERB_ORDER if v in rule.verbs]
            union = {
                v
                for row in PERMISSIONS
                if row.scope == scope and (row.api_group, row.resource) == keys[scoped.index(rule)]
                for v in row.verbs
            }
            assert set(rule.verbs) == union
    assert rules["cluster"] == (
        Rule("", "namespaces", ("get", "patch")),
        Rule("", "nodes", ("get", "list")),
    )
    # Merging the table twice over changes nothing.
    assert rules_by_scope(PERMISSIONS + PERMISSIONS) == rules


def test_rule_renders_as_a_kubernetes_policy_rule() -> None:
    assert Rule("apps", "deployments", ("get", "patch")).as_k8s() == {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "patch"],
    }


def test_unknown_verbs_are_refused() -> None:
    bad = Permission("status", "", "pods", frozenset({"get", "*"}))
    with pytest.raises(ValueError, match="status"):
        rules_by_scope((bad,))
