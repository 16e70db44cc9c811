"""The real kube-apiserver stand-in answers like a cluster: validation, conflicts, RBAC, status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cloudcoil.models.istio.networking.v1beta1 import VirtualService
from kubernetes import client as k8s
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from tests.fixtures.apiserver import (
    ADMIN_USER,
    MESHBOT_USER,
    Identity,
    RunningApiServer,
    start_apiserver,
)
from tests.fixtures.istio_crds import ISTIO_KINDS, IstioKind

VS_GROUP, VS_VERSION, VS_PLURAL = "networking.istio.io", "v1beta1", "virtualservices"


def virtual_service(name: str, stable: Any = 90, canary: Any = 10) -> dict[str, Any]:
    host = f"{name}.svc.cluster.local"
    return {
        "apiVersion": f"{VS_GROUP}/{VS_VERSION}",
        "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {
            "hosts": [host],
            "http": [{"route": [
                {"destination": {"host": host, "subset": "stable"}, "weight": stable},
                {"destination": {"host": host, "subset": "canary"}, "weight": canary},
            ]}],
        },
    }


def error_body(exc: ApiException) -> dict[str, Any]:
    """The Status object of a failed call."""
    assert exc.body is not None
    body: dict[str, Any] = json.loads(exc.body)
    return body


def obj(value: object) -> dict[str, Any]:
    """A custom object as CustomObjectsApi returns it (typed ``object``)."""
    assert isinstance(value, dict)
    return value


def test_readyz_and_version(apiserver: RunningApiServer) -> None:
    status, body = apiserver.get("/readyz")
    assert (status, body) == (200, b"ok")
    status, body = apiserver.get("/version")
    assert status == 200
    assert json.loads(body)["gitVersion"].startswith("v1.")


def test_istio_crds_are_established_and_served(apiserver: RunningApiServer) -> None:
    with apiserver.api_client() as api:
        crds = k8s.ApiextensionsV1Api(api).list_custom_resource_definition().items
        by_name = {crd.metadata.name: crd for crd in crds if crd.metadata is not None}
        for kind in ISTIO_KINDS:
            crd = by_name[kind.crd_name]
            assert crd.status is not None
            assert any(c.type == "Established" and c.status == "True"
                       for c in crd.status.conditions or [])
            storage = [v.name for v in crd.spec.versions if v.storage]
            assert storage == [kind.storage_version]
            for version in kind.versions:
                resources = k8s.CustomObjectsApi(api).get_api_resources(kind.group, version)
                assert kind.plural in {r.name for r in resources.resources}


MINIMAL_SPECS: dict[str, dict[str, Any]] = {
    "VirtualService": {"hosts": ["reviews"], "http": [{"route": [{"destination": {
        "host": "reviews", "subset": "v1"}, "weight": 100}]}]},
    "DestinationRule": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}],
                        "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}},
    "Gateway": {"selector": {"istio": "ingressgateway"}, "servers": [
        {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]},
    "PeerAuthentication": {"mtls": {"mode": "STRICT"}},
    "AuthorizationPolicy": {"action": "ALLOW", "rules": [{"from": [{"source": {
        "principals": ["cluster.local/ns/default/sa/sleep"]}}]}]},
    "Telemetry": {"tracing": [{"randomSamplingPercentage": 10.0}]},
}


@pytest.mark.parametrize("kind", ISTIO_KINDS, ids=lambda k: k.kind)
def test_every_kind_accepts_what_the_models_accept(
    apiserver: RunningApiServer, apiserver_namespace: str, kind: IstioKind
) -> None:
    for version in kind.versions:
        manifest = {"apiVersion": f"{kind.group}/{version}", "kind": kind.kind,
                    "metadata": {"name": f"minimal-{version}"}, "spec": MINIMAL_SPECS[kind.kind]}
        kind.model(version).model_validate(manifest)
        with apiserver.api_client() as api:
            created = obj(k8s.CustomObjectsApi(api).create_namespaced_custom_object(
                kind.group, version, apiserver_namespace, kind.plural, manifest))
        assert created["spec"] == manifest["spec"]


def test_a_missing_binary_fails_with_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="make apiserver"), start_apiserver(
            tmp_path / "data", binary=tmp_path / "missing"):
        pass


def test_valid_virtual_service_is_stored(
    apiserver: RunningApiServer, apiserver_namespace: str
) -> None:
    manifest = virtual_service("reviews")
    VirtualService.model_validate(manifest)  # what we send is valid by Istio's published models
    with apiserver.api_client() as api:
        objects = k8s.CustomObjectsApi(api)
        created = obj(objects.create_namespaced_custom_object(
            VS_GROUP, VS_VERSION, apiserver_namespace, VS_PLURAL, manifest))
        assert created["metadata"]["resourceVersion"]
        stored = obj(objects.get_namespaced_custom_object(
            VS_GROUP, VS_VERSION, apiserver_namespace, VS_PLURAL, "reviews"))
        assert stored["spec"] == manifest["spec"]
        # Served at v1 too, the same object.
        as_v1 = obj(objects.get_namespaced_custom_object(
            VS_GROUP, "v1", apiserver_namespace, VS_PLURAL, "reviews"))
        assert as_v1["spec"] == manifest["spec"]


def test_invalid_virtual_service_is_rejected_by_the_server(
    apiserver: RunningApiServer, apiserver_namespace: str
) -> None:
    manifest = virtual_service("ratings", stable="ninety")
    with apiserver.api_client() as api, pytest.raises(ApiException) as caught:
        k8s.CustomObjectsApi(api).create_namespaced_custom_object(
            VS_GROUP, VS_VERSION, apiserver_namespace, VS_PLURAL, manifest)
    assert caught.value.status == 422
    body = error_body(caught.value)
    assert body["reason"] == "Invalid"
    causes = body["details"]["causes"]
    assert any(c["field"] == "spec.http[0].route[0].weight" for c in causes), causes


def test_missing_required_destination_is_rejected(
    apiserver: RunningApiServer, apiserver_namespace: str
) -> None:
    manifest = virtual_service("details")
    del manifest["spec"]["http"][0]["route"][1]["destination"]
    with apiserver.api_client() as api, pytest.raises(ApiException) as caught:
        k8s.CustomObjectsApi(api).create_namespaced_custom_object(
            VS_GROUP, VS_VERSION, apiserver_namespace, VS_PLURAL, manifest)
    assert caught.value.status == 422
    assert "spec.http[0].route[1].destination" in (caught.value.body or "")


def test_unknown_fields_are_pruned(apiserver: RunningApiServer, apiserver_namespace: str) -> None:
    manifest = virtual_service("pruned")
    manifest["spec"]["http"][0]["notAField"] = True
    with apiserver.api_client() as api:
        created = obj(k8s.CustomObjectsApi(api).create_namespaced_custom_object(
            VS_GROUP, VS_VERSION, apiserver_namespace, VS_PLURAL, manifest))
    assert "notAField" not in created["spec"]["http"][0]
    assert created["spec"]["http"][0]["route"][0]["weight"] == 90


def test_stale_resource_version_is_a_conflict(
    apiserver: RunningApiServer, apiserver_namespace: str
) -> None:
    with apiserver.api_client() as api:
        objects = k8s.CustomObjectsApi(api)
        created = obj(objects.create_namespaced_custom_object(
            VS_GROUP, VS_VERSION, apiserver_namespace, VS_PLURAL, virtual_service("cart")))
        stale = created["metadata"]["resourceVersion"]

        first = json.loads(json.dumps(created))
        first["spec"]["http"][0]["route"][0]["weight"] = 50
        first["spec"]["http"][0]["route"][1]["weight"] = 50
        updated = obj(objects.replace_namespaced_custom_object(
            VS_GROUP, VS_VERSION, apiserver_namespace, VS_PLURAL, "cart", first))
        assert updated["metadata"]["resourceVersion"] != stale

        second = json.loads(json.dumps(created))  # still carries the stale resourceVersion
        second["spec"]["http"][0]["route"][0]["weight"] = 0
        second["spec"]["http"][0]["route"][1]["weight"] = 100
        with pytest.raises(ApiException) as put_conflict:
            objects.replace_namespaced_custom_object(
                VS_GROUP, VS_VERSION, apiserver_namespace, VS_PLURAL, "cart", second)
        assert put_conflict.value.status == 409
        assert error_body(put_conflict.value)["reason"] == "Conflict"

        patch = {"metadata": {"resourceVersion": stale},
                 "spec": {"http": second["spec"]["http"]}}
        with pytest.raises(ApiException) as patch_conflict:
            objects.patch_namespaced_custom_object(
                VS_GROUP, VS_VERSION, apiserver_namespace, VS_PLURAL, "cart", patch)
        assert patch_conflict.value.status == 409

        current = obj(objects.get_namespaced_custom_object(
            VS_GROUP, VS_VERSION, apiserver_namespace, VS_PLURAL, "cart"))
        assert [r["weight"] for r in current["spec"]["http"][0]["route"]] == [50, 50]


def test_meshbot_without_a_role_binding_is_forbidden(
    apiserver: RunningApiServer, apiserver_namespace: str
) -> None:
    with apiserver.api_client("meshbot") as api:
        core = k8s.CoreV1Api(api)
        with pytest.raises(ApiException) as caught:
            core.list_namespaced_secret(apiserver_namespace)
        assert caught.value.status == 403
        assert MESHBOT_USER in error_body(caught.value)["message"]

        apiserver.grant_meshbot(apiserver_namespace, [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}])
        assert core.list_namespaced_secret(apiserver_namespace).items == []
        # The binding is namespaced: elsewhere meshbot is still forbidden.
        with pytest.raises(ApiException) as elsewhere:
            core.list_namespaced_secret("default")
        assert elsewhere.value.status == 403


def test_namespaces_are_cluster_scoped(apiserver: RunningApiServer) -> None:
    name = apiserver.create_namespace(labels={"istio-injection": "enabled"})
    with apiserver.api_client() as api:
        core = k8s.CoreV1Api(api)
        namespace = core.read_namespace(name)
        assert namespace.metadata is not None
        assert namespace.metadata.namespace is None
        assert namespace.metadata.labels == {"istio-injection": "enabled",
                                             "kubernetes.io/metadata.name": name}
        assert namespace.status is not None
        assert namespace.status.phase == "Active"
        assert name in {n.metadata.name for n in core.list_namespace().items if n.metadata}
        with pytest.raises(ApiException) as caught:
            k8s.CustomObjectsApi(api).create_namespaced_custom_object(
                VS_GROUP, VS_VERSION, "no-such-namespace", VS_PLURAL, virtual_service("x"))
        assert caught.value.status == 404
    with apiserver.api_client("meshbot") as api, pytest.raises(ApiException) as forbidden:
        k8s.CoreV1Api(api).list_namespace()
    assert forbidden.value.status == 403


def test_a_test_plays_the_deployment_controller_through_the_status_subresource(
    apiserver: RunningApiServer, apiserver_namespace: str
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "reviews-v2", "labels": {"app": "reviews", "version": "v2"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "reviews", "version": "v2"}},
            "template": {
                "metadata": {"labels": {"app": "reviews", "version": "v2"}},
                "spec": {"containers": [{"name": "reviews", "image": "reviews:v2"}]},
            },
        },
    }
    with apiserver.api_client() as api:
        apps = k8s.AppsV1Api(api)
        created = apps.create_namespaced_deployment(
            apiserver_namespace, k8s.V1Deployment.model_validate(deployment))
        assert created.metadata is not None
        assert created.status is None or created.status.ready_replicas is None  # no controller

        # Status sent through the main resource is ignored...
        apps.patch_namespaced_deployment(
            "reviews-v2", apiserver_namespace, {"status": {"replicas": 3, "readyReplicas": 3}})
        unchanged = apps.read_namespaced_deployment("reviews-v2", apiserver_namespace)
        assert unchanged.status is None or unchanged.status.ready_replicas is None

        # ...and set through the status subresource, as the controller would.
        status = {"status": {
            "observedGeneration": created.metadata.generation,
            "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3,
            "conditions": [{"type": "Available", "status": "True",
                            "reason": "MinimumReplicasAvailable", "message": "set by the test"}],
        }}
        apps.patch_namespaced_deployment_status("reviews-v2", apiserver_namespace, status)
        read = apps.read_namespaced_deployment_status("reviews-v2", apiserver_namespace)
        assert read.status is not None and read.metadata is not None
        assert read.status.ready_replicas == 3
        assert read.status.observed_generation == read.metadata.generation
        assert [c.type for c in read.status.conditions or []] == ["Available"]


def test_kubeconfig_for_each_identity(apiserver: RunningApiServer, tmp_path: Path) -> None:
    identities: list[tuple[Identity, str]] = [("admin", ADMIN_USER), ("meshbot", MESHBOT_USER)]
    for identity, user in identities:
        path = apiserver.write_kubeconfig(tmp_path / f"{identity}.yaml", identity)
        api = kube_config.new_client_from_config(config_file=str(path))  # type: ignore[no-untyped-call]
        with api:
            review = k8s.AuthenticationV1Api(api).create_self_subject_review(
                k8s.V1SelfSubjectReview())
        assert review.status is not None and review.status.user_info is not None
        assert review.status.user_info.username == user
