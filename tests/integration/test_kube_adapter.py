"""meshbot's Kubernetes adapter and set_weights over real HTTP.

Against the real kube-apiserver, meshbot as its own identity under the chart's RBAC (``kube``,
``cluster``), except where a test injects a fault the real server will not produce on demand (a
given status, a stall, a write slipped in just before meshbot's): those use the emulator
(``emulated_kube``, ``emulated_cluster``)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from jobs.adapters.kube import KubeClient, load_api_client
from jobs.domain.routes import Subsets, Weights
from jobs.runtime.weights import Abandoned, preflight, set_weights
from meshbot.errors import (
    GitOpsOwned,
    MeshConflict,
    MeshInvalid,
    MeshNotFound,
    MeshUnavailable,
    PermanentError,
    Refused,
)
from playground.kube_emulator import RunningCluster, start_cluster
from playground.sample_mesh import virtual_service
from tests.fixtures.real_cluster import Cluster, RealCluster

GROUP, VERSION = "networking.istio.io", "v1beta1"
NS, SVC = "production", "payment-service"
SUBSETS = Subsets()


def stored_vs(cluster: Cluster, name: str = SVC, ns: str = NS) -> dict[str, Any]:
    return cluster.get(GROUP, VERSION, "virtualservices", ns, name)


def route_weights(vs: dict[str, Any]) -> list[tuple[str, int]]:
    return [(d["destination"]["subset"], d["weight"]) for d in vs["spec"]["http"][0]["route"]]


def test_reads_virtual_services_and_destination_rules(kube: KubeClient) -> None:
    vs = kube.get_virtual_service(NS, SVC)
    assert vs["spec"]["hosts"] == [SVC] and vs["metadata"]["resourceVersion"]
    rule = kube.get_destination_rule(NS, SVC)
    assert [s["name"] for s in rule["spec"]["subsets"]] == ["stable", "canary"]
    assert len(kube.list_destination_rules(NS)) == 9


def test_missing_objects_are_mesh_not_found(kube: KubeClient) -> None:
    with pytest.raises(MeshNotFound, match="VirtualService production/no-such-service"):
        kube.get_virtual_service(NS, "no-such-service")
    with pytest.raises(MeshNotFound):
        set_weights(kube, NS, ["no-such-service"], "no-such-service", SUBSETS, Weights(90, 10))


def test_counts_only_ready_pods(kube: KubeClient, cluster: RealCluster) -> None:
    assert kube.count_ready_pods(NS, {"app": SVC, "version": "v2"}) == 1
    assert kube.count_ready_pods("istio-system", {"app": "istiod"}) == 3

    def unready(pod: dict[str, Any]) -> None:
        pod["status"]["conditions"][0]["status"] = "False"

    cluster.change("", "v1", "pods", NS, f"{SVC}-v2-0", unready)
    assert kube.count_ready_pods(NS, {"app": SVC, "version": "v2"}) == 0


def test_conditional_patch_of_a_stale_read_is_mesh_conflict(
    kube: KubeClient, cluster: RealCluster
) -> None:
    vs = kube.get_virtual_service(NS, SVC)
    cluster.change(
        GROUP,
        VERSION,
        "virtualservices",
        NS,
        SVC,
        lambda obj: obj["metadata"].setdefault("labels", {}).update(team="payments"),
    )
    with pytest.raises(MeshConflict) as err:
        kube.patch_virtual_service_route(
            NS, SVC, vs["spec"]["http"], vs["metadata"]["resourceVersion"]
        )
    assert isinstance(err.value.__cause__, client.ApiException)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (409, MeshConflict),
        (500, MeshUnavailable),
        (503, MeshUnavailable),
        (429, MeshUnavailable),
        (403, PermanentError),
        (422, PermanentError),
    ],
)
def test_statuses_map_onto_meshbot_errors(
    emulated_kube: KubeClient, emulated_cluster: RunningCluster, status: int, error: type[Exception]
) -> None:
    emulated_cluster.fail(status, method="GET", plural="virtualservices")
    with pytest.raises(error) as err:
        emulated_kube.get_virtual_service(NS, SVC)
    assert not isinstance(err.value, MeshNotFound)
    assert emulated_kube.get_virtual_service(NS, SVC)  # the fault was one call only


def test_timeouts_and_refused_connections_are_mesh_unavailable(
    emulated_cluster: RunningCluster, tmp_path: Path
) -> None:
    emulated_cluster.stall(30, method="GET", plural="virtualservices")
    slow = KubeClient(load_api_client(), timeout=(1.0, 0.2))
    with slow, pytest.raises(MeshUnavailable) as stalled:
        slow.get_virtual_service(NS, SVC)
    with start_cluster() as gone:
        kubeconfig = gone.write_kubeconfig(tmp_path / "gone")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KUBECONFIG", str(kubeconfig))
        with KubeClient.from_environment() as lost, pytest.raises(MeshUnavailable) as refused:
            lost.get_virtual_service(NS, SVC)
    # Said to people in words; urllib3's text ("HTTPSConnectionPool(host=…): Max retries
    # exceeded …") is for the log.
    assert stalled.value.message == ("the Kubernetes API did not answer in time (about "
                                     "VirtualService production/payment-service)")
    assert refused.value.message.startswith("the Kubernetes API refused the connection")
    for said in (stalled.value.message, refused.value.message):
        assert "ConnectionPool" not in said and "retries" not in said


def test_missing_configuration_is_permanent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(PermanentError, match="could not load its Kubernetes configuration"):
        KubeClient.from_environment()


def test_set_weights_shifts_traffic(kube: KubeClient, cluster: RealCluster) -> None:
    before, after = set_weights(kube, NS, [SVC], SVC, SUBSETS, Weights.canary_at(10))
    assert (before, after) == (Weights(100, 0), Weights(90, 10))
    assert route_weights(stored_vs(cluster)) == [("stable", 90), ("canary", 10)]
    before, after = set_weights(kube, NS, [SVC], SVC, SUBSETS, Weights(100, 0))
    assert (before, after) == (Weights(90, 10), Weights(100, 0))


def test_preflight_checks_everything_and_writes_nothing(
    kube: KubeClient, cluster: RealCluster
) -> None:
    set_weights(kube, NS, [SVC], SVC, SUBSETS, Weights.canary_at(10))
    written = stored_vs(cluster)
    assert preflight(kube, NS, [SVC], SVC, SUBSETS, Weights.canary_at(50)) == Weights(90, 10)
    assert stored_vs(cluster) == written
    with pytest.raises(MeshInvalid):
        preflight(kube, NS, [SVC], SVC, Subsets(stable="blue", canary="green"), Weights(90, 10))


def test_several_virtual_services_change_together(
    kube: KubeClient, cluster: RealCluster
) -> None:
    ingress = virtual_service(SVC, namespace="istio-system")
    ingress["metadata"]["name"] = "payments-ingress"
    ingress["spec"]["gateways"] = ["istio-system/public"]
    for dest in ingress["spec"]["http"][0]["route"]:
        dest["destination"]["host"] = f"{SVC}.{NS}.svc.cluster.local"
    cluster.put_object(GROUP, VERSION, "virtualservices", ingress)
    names = [SVC, "istio-system/payments-ingress"]
    set_weights(kube, NS, names, SVC, SUBSETS, Weights.canary_at(25))
    for stored in (stored_vs(cluster), stored_vs(cluster, "payments-ingress", "istio-system")):
        assert route_weights(stored) == [("stable", 75), ("canary", 25)]
    assert stored_vs(cluster, "payments-ingress", "istio-system")["spec"]["gateways"] == [
        "istio-system/public"
    ]


def test_a_refusal_in_any_virtual_service_changes_none(
    kube: KubeClient, cluster: RealCluster
) -> None:
    broken = virtual_service("payments-edge")
    broken["spec"]["http"][0]["route"] = [{"destination": {"host": SVC}}]  # no subsets
    cluster.put_object(GROUP, VERSION, "virtualservices", broken)
    with pytest.raises(MeshInvalid) as err:
        set_weights(kube, NS, [SVC, "payments-edge"], SVC, SUBSETS, Weights.canary_at(10))
    assert "(no subset)" in err.value.message and "production/payments-edge" in err.value.message
    assert route_weights(stored_vs(cluster)) == [("stable", 100), ("canary", 0)]


@pytest.mark.parametrize("where", ["labels", "annotations"])
@pytest.mark.parametrize(
    ("key", "controller"),
    [
        ("argocd.argoproj.io/instance", "Argo CD"),
        ("kustomize.toolkit.fluxcd.io/name", "Flux"),
    ],
)
def test_gitops_owned_objects_are_refused(
    kube: KubeClient, cluster: RealCluster, where: str, key: str, controller: str
) -> None:
    cluster.change(
        GROUP,
        VERSION,
        "virtualservices",
        NS,
        SVC,
        lambda vs: vs["metadata"].setdefault(where, {}).update({key: "payments"}),
    )
    with pytest.raises(GitOpsOwned) as err:
        set_weights(kube, NS, [SVC], SVC, SUBSETS, Weights.canary_at(10))
    assert controller in err.value.message and "would revert" in err.value.message
    assert route_weights(stored_vs(cluster)) == [("stable", 100), ("canary", 0)]
    set_weights(kube, NS, [SVC], SVC, SUBSETS, Weights.canary_at(10), allow_gitops=True)
    assert route_weights(stored_vs(cluster)) == [("stable", 90), ("canary", 10)]


def test_no_traffic_to_a_canary_without_ready_pods(
    kube: KubeClient, cluster: RealCluster
) -> None:
    def unready(pod: dict[str, Any]) -> None:
        pod["status"]["conditions"][0]["status"] = "False"

    cluster.change("", "v1", "pods", NS, f"{SVC}-v2-0", unready)
    with pytest.raises(Refused, match=r"no ready pods \(selector app=payment-service,version=v2"):
        set_weights(kube, NS, [SVC], SVC, SUBSETS, Weights.canary_at(5))
    assert route_weights(stored_vs(cluster)) == [("stable", 100), ("canary", 0)]
    set_weights(kube, NS, [SVC], SVC, SUBSETS, Weights(100, 0))  # a rollback is never blocked


def test_virtual_service_without_subsets_says_what_is_missing(
    kube: KubeClient, cluster: RealCluster
) -> None:
    def strip_subsets(vs: dict[str, Any]) -> None:
        vs["spec"]["http"][0]["route"] = [{"destination": {"host": SVC}}]

    cluster.change(GROUP, VERSION, "virtualservices", NS, SVC, strip_subsets)
    with pytest.raises(MeshInvalid) as err:
        set_weights(kube, NS, [SVC], SVC, SUBSETS, Weights.canary_at(10))
    assert "(no subset)" in err.value.message
    assert "subsets 'stable' and 'canary'" in err.value.message


def test_stable_only_route_gets_the_canary_destination(
    kube: KubeClient, cluster: RealCluster
) -> None:
    cluster.change(
        GROUP, VERSION, "virtualservices", NS, SVC, lambda vs: vs["spec"]["http"][0]["route"].pop()
    )
    set_weights(kube, NS, [SVC], SVC, SUBSETS, Weights.canary_at(5))
    assert route_weights(stored_vs(cluster)) == [("stable", 95), ("canary", 5)]


def test_a_conflict_is_retried_and_keeps_the_other_writers_change(
    emulated_kube: KubeClient,
    emulated_cluster: RunningCluster,
) -> None:
    emulated_cluster.interfere(
        lambda vs: vs["metadata"].setdefault("labels", {}).update(team="payments"),
        plural="virtualservices",
        name=SVC,
    )
    asked: list[bool] = []

    def still_progressing() -> bool:
        asked.append(True)
        return True

    set_weights(
        emulated_kube, NS, [SVC], SVC, SUBSETS, Weights.canary_at(10),
        should_continue=still_progressing,
    )
    stored = stored_vs(emulated_cluster)
    assert asked == [True, True]  # before the write, and before its retry
    assert stored["metadata"]["labels"] == {"team": "payments"}
    assert route_weights(stored) == [("stable", 90), ("canary", 10)]


def test_after_a_rollback_a_conflicting_job_never_reapplies_its_weight(
    emulated_kube: KubeClient,
    emulated_cluster: RunningCluster,
) -> None:
    rolled_back = threading.Event()

    def rollback(vs: dict[str, Any]) -> None:  # another worker rolls back meanwhile
        vs["spec"]["http"][0]["route"][0]["weight"] = 100
        vs["spec"]["http"][0]["route"][1]["weight"] = 0
        vs["metadata"].setdefault("annotations", {})["rolled-back"] = "true"
        rolled_back.set()

    emulated_cluster.interfere(rollback, plural="virtualservices", name=SVC)
    with pytest.raises(Abandoned):
        set_weights(
            emulated_kube,
            NS,
            [SVC],
            SVC,
            SUBSETS,
            Weights.canary_at(50),
            should_continue=lambda: not rolled_back.is_set(),
        )
    assert route_weights(stored_vs(emulated_cluster)) == [("stable", 100), ("canary", 0)]


def test_persistent_conflicts_give_up_as_mesh_conflict(
    emulated_kube: KubeClient, emulated_cluster: RunningCluster
) -> None:
    emulated_cluster.fail(409, method="PATCH", plural="virtualservices", times=3)
    with pytest.raises(MeshConflict):
        set_weights(emulated_kube, NS, [SVC], SVC, SUBSETS, Weights.canary_at(10),
                    max_attempts=3, backoff=0)
    set_weights(emulated_kube, NS, [SVC], SVC, SUBSETS, Weights.canary_at(10), backoff=0)


def test_two_real_writers_on_one_virtual_service_lose_nothing(
    kube: KubeClient, cluster: RealCluster
) -> None:
    """meshbot shifts weights while another client (the admin, a controller) bumps an annotation
    of the same VirtualService. The 409s come from the real server; both sides re-read and retry,
    and neither loses an update. The race runs until meshbot has met at least one conflict."""
    min_rounds, min_conflicts, max_rounds = 15, 3, 95
    start = threading.Barrier(2, timeout=10)
    done = threading.Event()
    failures: list[BaseException] = []
    meshbot_conflicts: list[int] = []
    bumps: list[int] = []
    last_step: list[int] = []

    def retrying() -> bool:  # set_weights asks this before retrying a 409
        meshbot_conflicts.append(1)
        return True

    def meshbot() -> None:
        start.wait()
        try:
            for step in range(1, max_rounds + 1):
                set_weights(kube, NS, [SVC], SVC, SUBSETS, Weights.canary_at(step),
                            max_attempts=50, backoff=0.001, should_continue=retrying)
                last_step.append(step)
                if step >= min_rounds and len(meshbot_conflicts) >= min_conflicts:
                    break
        finally:
            done.set()

    def other_controller() -> None:
        with cluster.server.api_client("admin") as api:
            custom = client.CustomObjectsApi(api)
            start.wait()
            while not done.is_set():
                bump_annotation(custom)
                bumps.append(1)

    def run(fn: Any) -> None:
        try:
            fn()
        except BaseException as exc:  # reported to the test thread below
            failures.append(exc)
            done.set()

    threads = [threading.Thread(target=run, args=(fn,)) for fn in (meshbot, other_controller)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not failures, failures
    assert meshbot_conflicts, "meshbot never met a 409 from the real server"
    stored = stored_vs(cluster)
    assert stored["metadata"]["annotations"]["bumps"] == str(len(bumps))
    step = last_step[-1]
    assert route_weights(stored) == [("stable", 100 - step), ("canary", step)]


def bump_annotation(custom: client.CustomObjectsApi) -> None:
    """A read-modify-write of a field meshbot does not own, retried on conflict like ours."""
    for _ in range(200):
        vs = custom.get_namespaced_custom_object(GROUP, VERSION, NS, "virtualservices", SVC)
        assert isinstance(vs, dict)
        count = int((vs["metadata"].get("annotations") or {}).get("bumps", "0"))
        body = {
            "metadata": {
                "resourceVersion": vs["metadata"]["resourceVersion"],
                "annotations": {"bumps": str(count + 1)},
            }
        }
        try:
            custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                NS,
                "virtualservices",
                SVC,
                body,
                _content_type="application/merge-patch+json",
            )
            return
        except client.ApiException as exc:
            if exc.status != 409:
                raise
    raise AssertionError("the annotation writer never got through")


def test_a_conditional_delete_of_a_stale_read_is_mesh_conflict_and_deletes_nothing(
    kube: KubeClient, cluster: RealCluster
) -> None:
    """An object changed since meshbot read (and planned) it is not deleted: the real server
    checks the precondition; the current one is deleted."""
    dr = kube.get_destination_rule(NS, SVC)
    cluster.change(GROUP, VERSION, "destinationrules", NS, SVC,
                   lambda obj: obj["metadata"].setdefault("labels", {}).update(team="payments"))
    with pytest.raises(MeshConflict):
        kube.delete_custom(GROUP, VERSION, "destinationrules", NS, SVC,
                           dr["metadata"]["resourceVersion"])
    current = kube.get_destination_rule(NS, SVC)
    assert current["metadata"]["labels"]["team"] == "payments"
    kube.delete_custom(GROUP, VERSION, "destinationrules", NS, SVC,
                       current["metadata"]["resourceVersion"])
    with pytest.raises(MeshNotFound):
        kube.get_destination_rule(NS, SVC)
