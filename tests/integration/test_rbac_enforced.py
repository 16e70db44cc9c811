"""The chart's RBAC, enforced by the real kube-apiserver: what meshbot's own identity may not do
is a real 403, and meshbot tells the caller which verb on which resource it was refused,
having changed nothing.

meshbot runs as ServiceAccount meshbot/meshbot with the Roles, ClusterRole and bindings the Helm
chart renders (tests/fixtures/real_cluster.py applies them once per session). A Role cannot
limit a patch to some fields: inside a managed namespace meshbot may patch a Deployment (inject
and restart need it), so what keeps it from changing an image there is its code. What the
server refuses is what the chart leaves out: replacing a Deployment, any write in a namespace
meshbot does not manage, Secrets, Namespaces other than the managed ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from jobs.adapters.audit import AuditLog
from jobs.adapters.kube import KubeClient
from meshbot.errors import MeshForbidden
from playground.sample_mesh import deployment, destination_rule, ready_pod, virtual_service
from tests.fixtures.apiserver import MESHBOT_USER, RunningApiServer
from tests.fixtures.meshbot import Mesh
from tests.fixtures.real_cluster import RealCluster
from tests.integration.chatops import ChatOps, write_policy

NET = ("networking.istio.io", "v1beta1")
NS = "production"
LEDGER = "ledger"  # a service of the policy in a namespace the chart does not manage
READ_ONLY = [{"apiGroups": ["networking.istio.io"],
              "resources": ["virtualservices", "destinationrules"], "verbs": ["get", "list"]},
             {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]


@pytest.fixture
def meshbot_api(cluster: RealCluster, tmp_path: Path) -> Iterator[client.ApiClient]:
    """A plain client with meshbot's own credentials: exactly what its processes are given."""
    path = cluster.write_kubeconfig(tmp_path / "meshbot-kubeconfig")
    api = kube_config.new_client_from_config(config_file=str(path))  # type: ignore[no-untyped-call]
    with api:
        yield api


def forbidden(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Make the call; it must be a 403 for meshbot's user. The Status body."""
    with pytest.raises(ApiException) as caught:
        call(*args, **kwargs)
    assert caught.value.status == 403, caught.value.body
    body: dict[str, Any] = yaml.safe_load(caught.value.body or "{}")
    assert body["reason"] == "Forbidden" and MESHBOT_USER in body["message"]
    return body


def test_meshbot_may_not_read_secrets(meshbot_api: client.ApiClient) -> None:
    core = client.CoreV1Api(meshbot_api)
    for namespace in ("production", "istio-system", "meshbot"):
        forbidden(core.list_namespaced_secret, namespace)
    forbidden(core.read_namespaced_secret, "cacerts", "istio-system")


def test_meshbot_may_not_change_a_deployments_image(
        meshbot_api: client.ApiClient, cluster: RealCluster, apiserver_namespace: str) -> None:
    apps = client.AppsV1Api(meshbot_api)
    before = cluster.get("apps", "v1", "deployments", NS, "payment-service-v2")
    replaced = dict(before, spec=dict(before["spec"]))
    replaced["spec"]["template"] = {
        **before["spec"]["template"],
        "spec": {"containers": [{"name": "payment-service", "image": "evil:latest"}]}}
    forbidden(apps.replace_namespaced_deployment, "payment-service-v2", NS, replaced)

    # Outside the managed namespaces not even a patch is allowed.
    cluster.put_object("apps", "v1", "deployments", deployment(
        "ledger-v1", {"app": LEDGER, "version": "v1"}, apiserver_namespace))
    image = {"spec": {"template": {"spec": {"containers": [
        {"name": LEDGER, "image": "evil:latest"}]}}}}
    forbidden(apps.patch_namespaced_deployment, "ledger-v1", apiserver_namespace, image)

    assert cluster.get("apps", "v1", "deployments", NS, "payment-service-v2") == before
    stored = cluster.get("apps", "v1", "deployments", apiserver_namespace, "ledger-v1")
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == "ledger-v1:latest"


def test_meshbot_may_not_patch_a_namespace_it_does_not_manage(
        meshbot_api: client.ApiClient, cluster: RealCluster) -> None:
    core = client.CoreV1Api(meshbot_api)
    label = {"metadata": {"labels": {"istio-injection": "enabled"}}}
    for name in ("meshbot", "kube-system", "default"):
        before = cluster.get("", "v1", "namespaces", None, name)
        forbidden(core.patch_namespace, name, label)
        assert cluster.get("", "v1", "namespaces", None, name) == before
    forbidden(core.list_namespace)  # and the managed ones are reachable by name only
    assert core.read_namespace(NS).metadata is not None


def test_the_adapter_names_the_verb_and_the_resource(kube: KubeClient,
                                                     apiserver_namespace: str) -> None:
    with pytest.raises(MeshForbidden) as err:
        kube.get_virtual_service(apiserver_namespace, "ledger")
    assert err.value.message.startswith(
        "meshbot is not allowed to get virtualservices.networking.istio.io "
        f"(VirtualService {apiserver_namespace}/ledger): its Kubernetes role does not grant "
        "that (403 Forbidden)")
    with pytest.raises(MeshForbidden, match="meshbot is not allowed to patch namespaces "
                                            r"\(namespace meshbot\)"):
        kube.patch_namespace_labels("meshbot", {"istio-injection": "enabled"}, "1")


# --- a 403 through a command: told to the caller, nothing changed ----------------------------


@pytest.fixture
def ledger_namespace(apiserver: RunningApiServer, cluster: RealCluster,
                     apiserver_namespace: str) -> str:
    """A namespace outside the chart's, with a ledger service meshbot may read but not write
    (a Role granting reads only, as someone might add by hand)."""
    for obj in (virtual_service(LEDGER, apiserver_namespace),
                destination_rule(LEDGER, apiserver_namespace)):
        cluster.put_object(*NET, obj["kind"].lower() + "s", obj)
    for version in ("v1", "v2"):
        labels = {"app": LEDGER, "version": version}
        cluster.put_object("", "v1", "pods",
                           ready_pod(f"{LEDGER}-{version}-0", labels, apiserver_namespace))
    apiserver.grant_meshbot(apiserver_namespace, READ_ONLY, name="ledger-read-only")
    return apiserver_namespace


@pytest.fixture
def policy_path(tmp_path: Path, ledger_namespace: str) -> Path:
    path = write_policy(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["services"][LEDGER] = {"tier": "core", "namespace": ledger_namespace}
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_forbidden_write_is_told_to_the_caller_and_changes_nothing(
        mesh: Mesh, ledger_namespace: str) -> None:
    ops = ChatOps.start(mesh)
    before = mesh.cluster.get(*NET, "virtualservices", ledger_namespace, LEDGER)
    ack, url = ops.command(f"canary {LEDGER} 10")
    assert "Accepted" in ack
    ops.run()

    told = ops.told(url)
    assert len(told) == 1, told
    assert told[0].startswith(f":x: `/mesh canary {LEDGER} 10` failed: meshbot is not allowed "
                              "to patch virtualservices.networking.istio.io (VirtualService "
                              f"{ledger_namespace}/{LEDGER}): its Kubernetes role does not "
                              "grant that (403 Forbidden)"), told
    assert mesh.cluster.get(*NET, "virtualservices", ledger_namespace, LEDGER) == before
    entry = AuditLog(mesh.redis).last(LEDGER, 5)[0]
    assert entry.outcome == "failed" and "not allowed to patch" in (entry.detail or "")


def test_a_namespace_meshbot_does_not_manage_is_refused_saying_so(mesh: Mesh) -> None:
    ops = ChatOps.start(mesh)
    _, url = ops.command("backup kube-system")
    ops.run()
    assert any("namespace `kube-system` does not exist or is not one meshbot manages "
               "(meshbot is not allowed to get namespaces (namespace kube-system)" in t
               for t in ops.told(url)), ops.told(url)
    assert ops.roots() == []
