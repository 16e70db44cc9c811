"""Header routes and mirroring: meshbot writes its own route and the managed route's mirror
fields, and leaves every other route and field as it found them."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from jobs.domain.routes_match import (
    AB_ROUTE,
    HeaderMatch,
    current_header,
    current_mirror,
    plan_header_route,
    plan_header_route_off,
    plan_mirror,
    plan_mirror_off,
)
from meshbot.errors import MeshInvalid

SVC, NS = "payment-service", "production"
FQDN = f"{SVC}.{NS}.svc.cluster.local"


def weighted(host: str = SVC) -> dict[str, Any]:
    return {
        "route": [
            {"destination": {"host": host, "subset": "stable"}, "weight": 90},
            {"destination": {"host": host, "subset": "canary"}, "weight": 10},
        ],
        "retries": {"attempts": 3, "perTryTimeout": "2s"},
        "timeout": "10s",
    }


def someone_elses() -> dict[str, Any]:
    """A route meshbot does not own: a path rule to another service."""
    return {
        "name": "legacy-api",
        "match": [{"uri": {"prefix": "/v0/"}}],
        "route": [{"destination": {"host": "legacy-api"}}],
    }


def vs_with(*http: dict[str, Any], namespace: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": SVC, "namespace": namespace, "resourceVersion": "7"},
        "spec": {"hosts": [SVC], "gateways": ["mesh"], "http": list(http)},
    }


def applied(vs: dict[str, Any], http: list[dict[str, Any]] | None) -> dict[str, Any]:
    assert http is not None, "expected a change"
    return dict(vs, spec=dict(vs["spec"], http=http))


CANARY_TRUE = HeaderMatch("canary", "true")


# --- header route ----------------------------------------------------------------------------


def test_header_route_goes_just_before_the_managed_route() -> None:
    vs = vs_with(someone_elses(), weighted())
    http = plan_header_route(vs, SVC, NS, CANARY_TRUE, "canary")
    assert http == [
        someone_elses(),
        {
            "name": AB_ROUTE,
            "match": [{"headers": {"canary": {"exact": "true"}}}],
            "route": [{"destination": {"host": SVC, "subset": "canary"}}],
        },
        weighted(),  # weights, retries and timeout exactly as found
    ]
    assert vs["spec"]["http"] == [someone_elses(), weighted()]  # the input is not modified


def test_header_route_replaces_meshbots_previous_one_and_only_it() -> None:
    vs = applied(vs_with(someone_elses(), weighted()),
                 plan_header_route(vs_with(someone_elses(), weighted()), SVC, NS, CANARY_TRUE,
                                   "canary"))
    http = plan_header_route(vs, SVC, NS, HeaderMatch("x-beta-user", "42"), "green")
    assert http is not None
    ours = [r for r in http if r.get("name") == AB_ROUTE]
    assert ours == [{
        "name": AB_ROUTE,
        "match": [{"headers": {"x-beta-user": {"exact": "42"}}}],
        "route": [{"destination": {"host": SVC, "subset": "green"}}],
    }]
    assert http[0] == someone_elses() and http[2] == weighted() and len(http) == 3


def test_header_route_already_in_place_is_no_change() -> None:
    vs = applied(vs_with(weighted()), plan_header_route(vs_with(weighted()), SVC, NS,
                                                        CANARY_TRUE, "canary"))
    assert plan_header_route(vs, SVC, NS, CANARY_TRUE, "canary") is None
    assert current_header(vs) == CANARY_TRUE


def test_header_route_moved_back_in_front_when_someone_reordered() -> None:
    vs = applied(vs_with(weighted()), plan_header_route(vs_with(weighted()), SVC, NS,
                                                        CANARY_TRUE, "canary"))
    vs["spec"]["http"].reverse()  # ours now after the catch-all: it would never match
    http = plan_header_route(vs, SVC, NS, CANARY_TRUE, "canary")
    assert http is not None and http[0]["name"] == AB_ROUTE and http[1] == weighted()


def test_header_route_uses_the_managed_routes_host_fqdn_in_a_gateway_object() -> None:
    gateway_vs = vs_with(weighted(FQDN), namespace="istio-system")
    http = plan_header_route(gateway_vs, SVC, NS, CANARY_TRUE, "canary")
    assert http is not None
    assert http[0]["route"] == [{"destination": {"host": FQDN, "subset": "canary"}}]


def test_header_names_must_be_lower_case() -> None:
    with pytest.raises(ValueError, match="lower-case"):
        HeaderMatch("X-Canary", "true")


def test_no_managed_route_is_refused_with_what_is_missing() -> None:
    with pytest.raises(MeshInvalid, match="no http route without a match"):
        plan_header_route(vs_with(someone_elses()), SVC, NS, CANARY_TRUE, "canary")


def test_header_route_off_removes_only_meshbots_route() -> None:
    before = vs_with(someone_elses(), weighted())
    vs = applied(before, plan_header_route(before, SVC, NS, CANARY_TRUE, "canary"))
    assert plan_header_route_off(vs) == [someone_elses(), weighted()]
    assert plan_header_route_off(before) is None  # nothing of meshbot's: nothing to write
    assert current_header(before) is None


# --- mirror ----------------------------------------------------------------------------------


def test_mirror_sets_both_fields_on_the_managed_route_only() -> None:
    vs = vs_with(someone_elses(), weighted())
    http = plan_mirror(vs, SVC, NS, 25, "canary")
    expected = weighted()
    expected.update(mirror={"host": SVC, "subset": "canary"}, mirrorPercentage={"value": 25.0})
    assert http == [someone_elses(), expected]
    written = applied(vs, http)
    assert current_mirror(written, SVC, NS) == 25.0
    assert plan_mirror(written, SVC, NS, 25, "canary") is None
    changed = plan_mirror(written, SVC, NS, 50, "canary")
    assert changed is not None and changed[1]["mirrorPercentage"] == {"value": 50.0}


def test_mirror_off_removes_both_fields_and_nothing_else() -> None:
    vs = vs_with(weighted())
    written = applied(vs, plan_mirror(vs, SVC, NS, 10, "canary"))
    assert plan_mirror_off(written, SVC, NS) == [weighted()]
    assert plan_mirror_off(vs, SVC, NS) is None
    assert current_mirror(vs, SVC, NS) is None


def test_a_mirror_without_a_percentage_mirrors_everything() -> None:
    route = copy.deepcopy(weighted())
    route["mirror"] = {"host": SVC, "subset": "canary"}
    assert current_mirror(vs_with(route), SVC, NS) == 100.0
