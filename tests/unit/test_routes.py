"""The managed route, its weights and the plan to change them (pure)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from jobs.domain.routes import (
    Subsets,
    Weights,
    find_managed_route,
    host_matches,
    plan_weights,
    read_weights,
)
from meshbot.errors import MeshInvalid

SVC, NS = "payment-service", "production"
FQDN = f"{SVC}.{NS}.svc.cluster.local"
BOTH = {"stable", "canary"}


def dest(subset: str | None, weight: int | None = None, host: str = SVC) -> dict[str, Any]:
    d: dict[str, Any] = {"destination": {"host": host}}
    if subset is not None:
        d["destination"]["subset"] = subset
    if weight is not None:
        d["weight"] = weight
    return d


def vs(*http: dict[str, Any], namespace: str = NS) -> dict[str, Any]:
    return {
        "metadata": {"name": SVC, "namespace": namespace},
        "spec": {"hosts": [SVC], "http": list(http)},
    }


def split(stable: int, canary: int, host: str = SVC) -> dict[str, Any]:
    return {"route": [dest("stable", stable, host), dest("canary", canary, host)]}


def test_weights_sum_to_100() -> None:
    assert Weights.canary_at(10) == Weights(stable=90, canary=10)
    assert str(Weights(90, 10)) == "stable 90 / canary 10"
    with pytest.raises(ValueError):
        Weights(90, 20)
    with pytest.raises(ValueError):
        Weights(110, -10)


@pytest.mark.parametrize(
    ("host", "vs_ns", "ok"),
    [
        (SVC, NS, True),
        (FQDN, NS, True),
        (FQDN, "istio-system", True),
        (SVC, "istio-system", False),  # a short name resolves in the VirtualService's namespace
        (f"{SVC}.{NS}", NS, False),
        ("order-service", NS, False),
    ],
)
def test_host_forms(host: str, vs_ns: str, ok: bool) -> None:
    assert host_matches(host, SVC, NS, vs_ns) is ok


def test_managed_route_is_first_unmatched_route_to_the_host() -> None:
    header_route = {
        "match": [{"headers": {"canary": {"exact": "true"}}}],
        "route": [dest("canary")],
    }
    other_host = {"route": [dest(None, host="legacy-payments")]}
    service = vs(header_route, other_host, split(80, 20, host=FQDN), split(0, 100))
    assert find_managed_route(service, SVC, NS) == 2
    assert read_weights(service, SVC, NS) == Weights(80, 20)


def test_no_managed_route_says_what_is_missing() -> None:
    only_matches = vs({"match": [{"uri": {"prefix": "/"}}], "route": [dest("stable")]})
    with pytest.raises(MeshInvalid, match="no http route without a match"):
        find_managed_route(only_matches, SVC, NS)
    with pytest.raises(MeshInvalid, match="no http route"):
        find_managed_route({"metadata": {}, "spec": {"hosts": [SVC]}}, SVC, NS)


def test_plan_changes_only_weights_and_keeps_every_other_field() -> None:
    managed = split(100, 0)
    managed["retries"] = {"attempts": 3}
    managed["route"][0]["headers"] = {"request": {"set": {"x-env": "prod"}}}
    header_route = {
        "match": [{"headers": {"canary": {"exact": "true"}}}],
        "route": [dest("canary")],
    }
    original = vs(header_route, managed)
    snapshot = copy.deepcopy(original)

    plan = plan_weights(original, SVC, NS, Weights.canary_at(25), defined_subsets=BOTH)

    assert original == snapshot  # the input is never mutated
    assert (plan.before, plan.after, plan.index) == (Weights(100, 0), Weights(75, 25), 1)
    assert plan.changes_anything and not plan.added_canary
    expected = copy.deepcopy(snapshot["spec"]["http"])
    expected[1]["route"][0]["weight"], expected[1]["route"][1]["weight"] = 75, 25
    assert plan.http == expected


def test_stable_only_route_gets_canary_at_zero_when_the_rule_defines_it() -> None:
    plan = plan_weights(
        vs({"route": [dest("stable")]}), SVC, NS, Weights.canary_at(10), defined_subsets=BOTH
    )
    assert plan.before == Weights(100, 0) and plan.added_canary
    assert plan.http[0]["route"] == [dest("stable", 90), dest("canary", 10)]


def test_stable_only_route_without_canary_subset_is_refused_with_what_is_missing() -> None:
    with pytest.raises(MeshInvalid) as err:
        plan_weights(
            vs({"route": [dest("stable")]}),
            SVC,
            NS,
            Weights.canary_at(10),
            defined_subsets={"stable"},
        )
    assert "only to subset 'stable'" in err.value.message
    assert "defines subset 'canary'" in err.value.message


def test_moving_traffic_back_to_stable_is_never_refused_for_a_missing_subset() -> None:
    plan = plan_weights(
        vs({"route": [dest("stable")]}), SVC, NS, Weights(100, 0), defined_subsets=set()
    )
    assert not plan.changes_anything
    plan = plan_weights(vs(split(50, 50)), SVC, NS, Weights(100, 0), defined_subsets=set())
    assert plan.http[0]["route"] == [dest("stable", 100), dest("canary", 0)]


def test_canary_traffic_to_an_undefined_subset_is_refused() -> None:
    with pytest.raises(MeshInvalid, match="defines subset 'canary'"):
        plan_weights(vs(split(100, 0)), SVC, NS, Weights.canary_at(5), defined_subsets={"stable"})


@pytest.mark.parametrize(
    ("route", "needle"),
    [
        ({"route": [dest(None)]}, "(no subset)"),
        ({"route": [dest("stable", 50), dest("stable", 50)]}, "each once"),
        ({"route": [dest("stable", 50), dest("green", 50)]}, "'green'"),
        ({"route": [dest("canary")]}, "no destination with subset 'stable'"),
        ({"route": [dest("stable", 90), dest("canary", 20)]}, "do not sum to 100"),
    ],
)
def test_unmanageable_routes_name_what_is_wrong(route: dict[str, Any], needle: str) -> None:
    with pytest.raises(MeshInvalid) as err:
        plan_weights(vs(route), SVC, NS, Weights.canary_at(10), defined_subsets=BOTH)
    assert needle in err.value.message


def test_subset_names_are_parameters() -> None:
    blue_green = vs({"route": [dest("blue", 100), dest("green", 0)]})
    roles = Subsets(stable="green", canary="blue")  # after a promote the roles swap
    assert read_weights(blue_green, SVC, NS, roles) == Weights(0, 100)
    plan = plan_weights(
        blue_green, SVC, NS, Weights.canary_at(10), subsets=roles, defined_subsets={"blue", "green"}
    )
    assert plan.http[0]["route"] == [dest("blue", 10), dest("green", 90)]


def test_missing_weights_follow_istio() -> None:
    assert read_weights(vs({"route": [dest("stable")]}), SVC, NS) == Weights(100, 0)
    no_weights = vs({"route": [dest("stable", 100), dest("canary")]})
    assert read_weights(no_weights, SVC, NS) == Weights(100, 0)
