"""Who a change of AuthorizationPolicies would cut, by Istio's ALLOW semantics, and the bodies
meshbot writes."""

from __future__ import annotations

from typing import Any

from jobs.domain import authz
from jobs.domain.authz import Caller
from meshbot.plan import merge_patch

V1 = "security.istio.io/v1"
NS, SVC = "production", "payment-service"
WEB = "cluster.local/ns/frontend/sa/web"
BATCH = "cluster.local/ns/jobs/sa/batch"


def allow(service: str, *sources: str, **extra: Any) -> dict[str, Any]:
    return authz.allow_body(V1, NS, service, list(sources), **extra)


DENY_ALL = authz.deny_all_body(V1, NS)


def test_deny_all_is_the_runbooks_empty_spec_labelled_as_meshbots() -> None:
    assert DENY_ALL["spec"] == {}
    assert DENY_ALL["metadata"] == {"name": "deny-all", "namespace": NS,
                                    "labels": {"app.kubernetes.io/managed-by": "meshbot"}}
    assert authz.is_deny_all(DENY_ALL) and authz.is_managed(DENY_ALL)
    assert not authz.is_deny_all(allow(SVC, WEB))


def test_allow_is_one_rule_from_the_sources_to_the_operations() -> None:
    body = allow(SVC, WEB, "jobs", methods=["GET"], paths=["/api/*"])
    assert body["metadata"]["name"] == "allow-payment-service-from-web-jobs"
    assert body["spec"] == {
        "selector": {"matchLabels": {"app": SVC}}, "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": [WEB]}},
                            {"source": {"namespaces": ["jobs"]}}],
                   "to": [{"operation": {"methods": ["GET"], "paths": ["/api/*"]}}]}]}
    assert "to" not in allow(SVC, WEB)["spec"]["rules"][0]


def test_long_names_stay_dns_labels_and_distinct() -> None:
    many = [f"cluster.local/ns/n/sa/account-number-{i}" for i in range(4)]
    first, second = authz.allow_name(SVC, many), authz.allow_name(SVC, many[:3])
    assert len(first) <= 63 and len(second) <= 63 and first != second


def test_deny_all_cuts_every_caller_no_allow_admits() -> None:
    callers = [Caller(SVC, WEB), Caller(SVC, BATCH), Caller("user-service", "frontend")]
    assert authz.cut(callers, [], [DENY_ALL]) == sorted(callers)
    allows = [allow(SVC, WEB), allow("user-service", "frontend")]
    assert authz.cut(callers, [], [*allows, DENY_ALL]) == [Caller(SVC, BATCH)]
    # Once the allows select the services, the rest is already shut out: nothing more is cut.
    assert authz.cut(callers, allows, [*allows, DENY_ALL]) == []


def test_a_namespace_rule_admits_its_principals_but_not_the_reverse() -> None:
    by_namespace = [allow(SVC, "jobs"), DENY_ALL]
    assert authz.admitted(by_namespace, Caller(SVC, BATCH))
    by_principal = [allow(SVC, BATCH), DENY_ALL]
    assert not authz.admitted(by_principal, Caller(SVC, "jobs"))


def test_the_first_allow_on_a_service_cuts_its_other_callers() -> None:
    callers = [Caller(SVC, WEB), Caller(SVC, BATCH), Caller("user-service", WEB)]
    assert authz.cut(callers, [], [allow(SVC, WEB)]) == [Caller(SVC, BATCH)]


def test_removing_the_only_allow_under_a_deny_all_cuts_its_callers() -> None:
    rule = allow(SVC, WEB)
    before = [DENY_ALL, rule]
    after = authz.replaced(before, None, removed=authz.name_of(rule))
    assert authz.cut([Caller(SVC, WEB)], before, after) == [Caller(SVC, WEB)]


def test_patterns_and_conditions_the_way_istio_matches_them() -> None:
    prefix = allow(SVC, "cluster.local/ns/frontend/*")
    assert authz.admitted([prefix], Caller(SVC, WEB))
    suffix = allow(SVC, "*/sa/web")
    assert authz.admitted([suffix], Caller(SVC, WEB))
    guarded = allow(SVC, WEB)
    guarded["spec"]["rules"][0]["from"][0]["source"]["ipBlocks"] = ["10.0.0.0/8"]
    assert not authz.admitted([guarded], Caller(SVC, WEB))  # maybe not: not counted
    other_labels = allow(SVC, WEB)
    other_labels["spec"]["selector"]["matchLabels"] = {"tier": "db"}
    assert not authz.admitted([other_labels], Caller(SVC, WEB))  # may select it, admits none
    elsewhere = allow("user-service", BATCH)
    assert authz.admitted([elsewhere], Caller(SVC, WEB))  # does not select it
    denying = dict(allow(SVC, BATCH), spec={"action": "DENY", "rules": [{}]})
    assert authz.admitted([denying], Caller(SVC, WEB))  # a deny-all changes nothing of it


def test_observed_callers_from_the_traffic_query() -> None:
    series = [
        {"metric": {"destination_service_name": SVC, "source_principal": f"spiffe://{WEB}",
                    "source_workload_namespace": "frontend"}},
        {"metric": {"destination_service_name": SVC, "source_principal": "unknown",
                    "source_workload_namespace": "jobs"}},
        {"metric": {"destination_service_name": SVC, "source_principal": "unknown",
                    "source_workload_namespace": "unknown"}},
        {"metric": {"destination_service_name": "not-ours", "source_principal": WEB}},
    ]
    assert authz.observed_callers(series, [SVC]) == [Caller(SVC, WEB), Caller(SVC, "jobs")]
    query = authz.traffic_query(NS)
    assert 'destination_workload_namespace="production"' in query
    assert "source_principal" in query and "source_workload_namespace" in query
    # A series born within the window counts whole: increase() would miss a caller whose
    # first sample already held all its requests.
    assert "increase(" in query and "[1h]) > 0 or (last_over_time(" in query
    assert "unless last_over_time(" in query and "[1h] offset 1h)" in query


def test_an_update_patch_turns_the_live_policy_into_the_body() -> None:
    live = allow(SVC, WEB, methods=["GET"])
    live["metadata"].update(resourceVersion="7", annotations={"note": "kept"})
    body = allow(SVC, WEB, paths=["/api/*"])
    patch = authz.update_patch(live, body)
    assert patch["metadata"]["resourceVersion"] == "7"
    written = merge_patch(live, patch)
    assert written["spec"] == body["spec"]
    assert written["metadata"]["annotations"] == {"note": "kept"}


def test_the_rbac_table_grants_authz_exactly_what_it_calls() -> None:
    from jobs.domain.rbac import permissions_for

    rows = {(p.api_group, p.resource, p.scope): p.verbs for p in permissions_for("authz")}
    assert rows == {
        ("security.istio.io", "authorizationpolicies", "namespaced"):
            frozenset({"get", "list", "create", "patch", "delete"}),
        ("", "namespaces", "cluster"): frozenset({"get"}),
    }


def test_a_rule_limited_to_some_operations_admits_only_part() -> None:
    """Methods or paths on the only rule for a caller that had everything limit it: that is a
    cut to report; the same limits before and after are not."""
    limited = allow(SVC, WEB, methods=["GET"])
    caller = Caller(SVC, WEB)
    assert not authz.admitted([limited], caller)
    assert authz.admission([limited], caller) == authz.PART
    assert authz.cut([caller], [], [limited]) == [caller]
    assert authz.cut([caller], [limited], [limited, DENY_ALL]) == []
    assert authz.cut([caller], [limited], [limited, allow(SVC, WEB)]) == []
    assert authz.cut([caller], [limited, allow(SVC, WEB)], [limited]) == [caller]
    # Asked for: the rule being written names the caller with those limits.
    assert authz.cut([caller], [], [limited], written=limited) == []
    assert authz.cut([caller, Caller(SVC, BATCH)], [], [limited], written=limited) == [
        Caller(SVC, BATCH)]
