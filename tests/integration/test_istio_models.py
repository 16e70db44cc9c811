"""Every Istio object meshbot writes validates against Istio's published models.

The models are cloudcoil's, generated from Istio's CRD schemas. They ignore unknown fields, so a
spec must also survive a round trip unchanged: a misspelt field would be dropped by the model.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from cloudcoil.models.istio.networking import v1beta1 as istio

from jobs.adapters.kube import KubeClient
from jobs.domain.routes import Subsets, Weights, plan_weights
from jobs.runtime.weights import set_weights
from playground.sample_mesh import SERVICES, sample_mesh_objects, virtual_service
from tests.fixtures.real_cluster import Cluster

GROUP, VERSION = "networking.istio.io", "v1beta1"
NS, SVC = "production", "payment-service"
MODELS: dict[str, Any] = {
    "VirtualService": istio.VirtualService,
    "DestinationRule": istio.DestinationRule,
}


def assert_valid_istio(obj: dict[str, Any]) -> None:
    model = MODELS[obj["kind"]].model_validate(obj)
    assert model.spec is not None
    dumped = model.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert dumped == obj["spec"], "a field Istio does not know was dropped by the model"


def test_the_check_rejects_what_istio_would() -> None:
    misspelt = virtual_service(SVC)
    misspelt["spec"]["http"][0]["route"][0]["wieght"] = 100
    with pytest.raises(AssertionError, match="does not know"):
        assert_valid_istio(misspelt)
    wrong_type = virtual_service(SVC)
    wrong_type["spec"]["http"][0]["route"][0]["weight"] = "ninety"
    with pytest.raises(ValueError):
        assert_valid_istio(wrong_type)


def test_sample_mesh_istio_objects_are_valid() -> None:
    istio_objects = [obj for group, *_, obj in sample_mesh_objects() if group == GROUP]
    assert len(istio_objects) == 2 * len(SERVICES)
    for obj in istio_objects:
        assert_valid_istio(obj)


@pytest.mark.parametrize("percent", [0, 1, 10, 50, 99, 100])
def test_planned_routes_are_valid(percent: int) -> None:
    service = virtual_service(SVC)
    service["spec"]["http"].insert(
        0,
        {
            "match": [{"headers": {"x-canary": {"exact": "true"}}}],
            "route": [{"destination": {"host": SVC, "subset": "canary"}}],
        },
    )
    service["spec"]["http"][1].update(retries={"attempts": 3, "perTryTimeout": "2s"}, timeout="10s")
    for route in ([service["spec"]["http"][1]["route"][0]], None):  # stable-only, then both
        candidate = copy.deepcopy(service)
        if route is not None:
            candidate["spec"]["http"][1]["route"] = route
        plan = plan_weights(
            candidate, SVC, NS, Weights.canary_at(percent), defined_subsets={"stable", "canary"}
        )
        written = dict(candidate, spec=dict(candidate["spec"], http=plan.http))
        assert_valid_istio(written)


def test_virtual_services_written_by_set_weights_are_valid(
    kube: KubeClient,
    cluster: Cluster,
) -> None:
    cluster.change(
        GROUP,
        VERSION,
        "virtualservices",
        NS,
        "auth-service",
        lambda vs: vs["spec"]["http"][0]["route"].pop(),
    )  # stable only
    for service, percent in ((SVC, 10), (SVC, 100), ("auth-service", 5), ("order-service", 0)):
        set_weights(kube, NS, [service], service, Subsets(), Weights.canary_at(percent))
        assert_valid_istio(cluster.get(GROUP, VERSION, "virtualservices", NS, service))
    assert_valid_istio(cluster.get(GROUP, VERSION, "destinationrules", NS, SVC))
