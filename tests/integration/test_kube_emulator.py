"""The Kubernetes emulator behaves like an API server where meshbot relies on it.

Driven through the official ``kubernetes`` client over real HTTP, as meshbot's adapter is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from playground.kube_emulator import MeshEmulator, RunningCluster, label_selector
from playground.kube_emulator_core import REQUESTS_KEPT

GROUP, VERSION = "networking.istio.io", "v1beta1"
NS, SVC = "production", "payment-service"


@pytest.fixture
def api(emulated_cluster: RunningCluster, tmp_path: Path) -> Iterator[client.ApiClient]:
    configuration = client.Configuration()
    kubeconfig = emulated_cluster.write_kubeconfig(tmp_path / "raw-kubeconfig")
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.retries = 0  # so that one injected fault is one failed call
    with client.ApiClient(configuration) as api_client:
        yield api_client


@pytest.fixture
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def get_vs(custom: client.CustomObjectsApi, name: str = SVC) -> dict[str, Any]:
    vs: dict[str, Any] = custom.get_namespaced_custom_object(
        GROUP, VERSION, NS, "virtualservices", name
    )
    return vs


def patch_vs(
    custom: client.CustomObjectsApi, body: Any, *, json_patch: bool = False, name: str = SVC
) -> dict[str, Any]:
    content_type = "application/json-patch+json" if json_patch else "application/merge-patch+json"
    result: dict[str, Any] = custom.patch_namespaced_custom_object(
        GROUP, VERSION, NS, "virtualservices", name, body, _content_type=content_type
    )
    return result


def test_every_write_gets_a_new_resource_version_and_identity_is_kept(
    custom: client.CustomObjectsApi,
) -> None:
    before = get_vs(custom)
    meta = before["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    after = patch_vs(custom, {"metadata": {"annotations": {"note": "x"}, "uid": "forged"}})
    assert int(after["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert after["metadata"]["uid"] == meta["uid"]
    assert after["metadata"]["generation"] == 1  # metadata-only change
    again = patch_vs(custom, {"spec": {"hosts": [SVC, "payments"]}})
    assert again["metadata"]["generation"] == 2
    assert again["metadata"]["resourceVersion"] != after["metadata"]["resourceVersion"]
    assert patch_vs(custom, {"spec": {"hosts": [SVC, "payments"]}}) == again  # a no-op write


def test_merge_patch_with_stale_resource_version_is_a_conflict(
    custom: client.CustomObjectsApi,
    emulated_cluster: RunningCluster,
) -> None:
    stale = get_vs(custom)["metadata"]["resourceVersion"]
    patch_vs(custom, {"metadata": {"labels": {"touched": "yes"}}})
    with pytest.raises(ApiException) as err:
        patch_vs(custom, {"metadata": {"resourceVersion": stale}, "spec": {"http": []}})
    assert err.value.status == 409
    stored = emulated_cluster.get(GROUP, VERSION, "virtualservices", NS, SVC)
    assert stored["spec"]["http"]  # unchanged
    fresh = get_vs(custom)["metadata"]["resourceVersion"]
    patch_vs(custom, {"metadata": {"resourceVersion": fresh}, "spec": {"gateways": ["mesh"]}})


def test_json_patch_and_put_are_conditional_too(custom: client.CustomObjectsApi) -> None:
    vs = get_vs(custom)
    stale = vs["metadata"]["resourceVersion"]
    patch_vs(
        custom,
        [
            {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 100},
            {"op": "add", "path": "/metadata/labels", "value": {"a": "b"}},
        ],
        json_patch=True,
    )
    with pytest.raises(ApiException) as err:
        patch_vs(
            custom,
            [{"op": "replace", "path": "/metadata/resourceVersion", "value": stale}],
            json_patch=True,
        )
    assert err.value.status == 409
    with pytest.raises(ApiException) as err:
        custom.replace_namespaced_custom_object(GROUP, VERSION, NS, "virtualservices", SVC, vs)
    assert err.value.status == 409
    current = get_vs(custom)
    current["spec"]["hosts"] = ["replaced"]
    replaced = custom.replace_namespaced_custom_object(
        GROUP, VERSION, NS, "virtualservices", SVC, current
    )
    assert replaced["spec"] == {"hosts": ["replaced"], "http": current["spec"]["http"]}


def test_create_returns_the_object_and_delete_honours_preconditions(
    custom: client.CustomObjectsApi,
) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualService",
        "metadata": {"name": "extra"},
        "spec": {"hosts": ["extra"]},
    }
    created = custom.create_namespaced_custom_object(GROUP, VERSION, NS, "virtualservices", body)
    assert created["metadata"]["namespace"] == NS and created["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, "virtualservices", body)
    assert err.value.status == 409
    with pytest.raises(ApiException) as err:
        custom.delete_namespaced_custom_object(
            GROUP,
            VERSION,
            NS,
            "virtualservices",
            "extra",
            body={"preconditions": {"resourceVersion": "1"}},
        )
    assert err.value.status == 409
    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, "virtualservices", "extra")
    with pytest.raises(ApiException) as err:
        get_vs(custom, "extra")
    assert err.value.status == 404


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=payment-service", {"payment-service-v1-0", "payment-service-v2-0"}),
        ("app==payment-service,version=v2", {"payment-service-v2-0"}),
        ("app=payment-service,version!=v2", {"payment-service-v1-0"}),
        (
            "app in (payment-service, auth-service),version in (v1)",
            {"payment-service-v1-0", "auth-service-v1-0"},
        ),
        ("app=auth-service,version notin (v1)", {"auth-service-v2-0"}),
        ("app=auth-service,version", {"auth-service-v1-0", "auth-service-v2-0"}),
        ("app=auth-service,!version", set()),
    ],
)
def test_list_honours_label_selectors(
    api: client.ApiClient, selector: str, expected: set[str]
) -> None:
    pods = client.CoreV1Api(api).list_namespaced_pod(NS, label_selector=selector)
    assert {p.metadata.name for p in pods.items} == expected


def test_malformed_label_selector_is_a_bad_request(api: client.ApiClient) -> None:
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(api).list_namespaced_pod(NS, label_selector="app=(x")
    assert err.value.status == 400
    assert label_selector("")({"any": "thing"})


def test_namespaces_are_cluster_scoped_objects(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    names = {n.metadata.name for n in core.list_namespace().items}
    assert {"production", "staging", "istio-system", "meshbot"} <= names
    assert core.read_namespace("production").metadata.labels["istio-injection"] == "enabled"
    labels = {"metadata": {"labels": {"istio-injection": "enabled"}}}
    patched = core.patch_namespace("staging", labels)
    assert patched.metadata.labels["istio-injection"] == "enabled"
    created = core.create_namespace({"metadata": {"name": "canary-lab"}})
    assert created.metadata.uid and created.metadata.namespace is None
    selected = core.list_namespace(label_selector="istio-injection=enabled").items
    assert {n.metadata.name for n in selected} == {"production", "staging"}
    with pytest.raises(ApiException) as err:
        core.read_namespace("absent")
    assert err.value.status == 404


def test_injected_faults_change_nothing(
    custom: client.CustomObjectsApi, emulated_cluster: RunningCluster
) -> None:
    before = emulated_cluster.get(GROUP, VERSION, "virtualservices", NS, SVC)
    emulated_cluster.fail(503, method="PATCH", plural="virtualservices", name=SVC)
    with pytest.raises(ApiException) as err:
        patch_vs(custom, {"spec": {"http": []}})
    assert err.value.status == 503
    assert emulated_cluster.get(GROUP, VERSION, "virtualservices", NS, SVC) == before
    patch_vs(custom, {"metadata": {"labels": {"after": "fault"}}})  # one time only


def test_a_kmock_reaction_intercepting_a_write_changes_nothing(
    custom: client.CustomObjectsApi,
    emulated_cluster: RunningCluster,
) -> None:
    before = emulated_cluster.get(GROUP, VERSION, "virtualservices", NS, SVC)

    def refuse_next_patch(emulator: MeshEmulator) -> None:
        emulator[kmock.method.PATCH][:1] << 409

    emulated_cluster.call(refuse_next_patch)
    with pytest.raises(ApiException) as err:
        patch_vs(custom, {"spec": {"http": []}})
    assert err.value.status == 409
    assert emulated_cluster.get(GROUP, VERSION, "virtualservices", NS, SVC) == before


def test_stall_times_out_the_client(
    custom: client.CustomObjectsApi, emulated_cluster: RunningCluster
) -> None:
    emulated_cluster.stall(30, method="GET", plural="virtualservices")
    with pytest.raises(urllib3.exceptions.HTTPError) as err:
        custom.get_namespaced_custom_object(
            GROUP, VERSION, NS, "virtualservices", SVC, _request_timeout=0.2
        )
    assert "timed out" in str(err.value).lower()


def test_a_lost_answer_lands_the_write_and_answers_the_status(
    custom: client.CustomObjectsApi, emulated_cluster: RunningCluster
) -> None:
    emulated_cluster.lose_answer(503, method="PATCH", plural="virtualservices", name=SVC)
    with pytest.raises(ApiException) as err:
        patch_vs(custom, {"metadata": {"labels": {"landed": "yes"}}})
    assert err.value.status == 503
    stored = emulated_cluster.get(GROUP, VERSION, "virtualservices", NS, SVC)
    assert stored["metadata"]["labels"] == {"landed": "yes"}
    patch_vs(custom, {"metadata": {"labels": {"landed": "again"}}})  # only the next one


def test_interfere_lands_a_concurrent_write_first(
    custom: client.CustomObjectsApi, emulated_cluster: RunningCluster
) -> None:
    rv = get_vs(custom)["metadata"]["resourceVersion"]
    emulated_cluster.interfere(
        lambda vs: vs["metadata"].setdefault("labels", {}).update(other="writer"),
        plural="virtualservices",
        name=SVC,
    )
    with pytest.raises(ApiException) as err:
        patch_vs(custom, {"metadata": {"resourceVersion": rv}, "spec": {"http": []}})
    assert err.value.status == 409
    stored = emulated_cluster.get(GROUP, VERSION, "virtualservices", NS, SVC)
    assert stored["metadata"]["labels"] == {"other": "writer"}


def test_kmocks_record_of_requests_stays_bounded_and_a_held_request_is_still_served(
    custom: client.CustomObjectsApi, emulated_cluster: RunningCluster
) -> None:
    """kmock filters every request it recorded to route the next one: unbounded, a long run
    (the soak) made each request slower than the last until calls timed out. A request held
    while many others pass must still be answered as usual once released."""
    held = emulated_cluster.hold(method="PATCH", plural="virtualservices", name=SVC)
    result: dict[str, Any] = {}
    writer = threading.Thread(target=lambda: result.update(
        patch_vs(custom, {"metadata": {"labels": {"held": "yes"}}})))
    writer.start()
    assert held.reached.wait(10)
    for _ in range(REQUESTS_KEPT + 50):  # more than are kept, all while the write is held
        get_vs(custom)
    held.release()
    writer.join(10)
    assert result["metadata"]["labels"]["held"] == "yes"

    for _ in range(REQUESTS_KEPT + 50):
        get_vs(custom)

    def recorded(emulator: MeshEmulator) -> int:
        return len(list(emulator))

    assert emulated_cluster.call(recorded) <= REQUESTS_KEPT
