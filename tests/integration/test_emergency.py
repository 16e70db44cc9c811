"""`/mesh emergency <namespace>` through the bot's listener, approvals, a real RQ worker, Redis,
the real kube-apiserver with meshbot under the chart's RBAC (no controllers: the tests play the
Deployment and disruption controllers through the status subresource) and the Slack stand-in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cloudcoil.models.istio.security import v1beta1 as istio_security
from rq import Queue
from rq.serializers import JSONSerializer

from jobs.adapters.backup_store import BackupStore
from jobs.adapters.kube import RESTARTED_AT
from jobs.runtime import context
from jobs.runtime.api import queue_names
from jobs.runtime.handlers import emergency
from jobs.runtime.reports import deliver_owed
from meshbot.settings import Settings
from playground.sample_mesh import deployment, destination_rule, virtual_service
from tests.fixtures.meshbot import CHANNEL, Mesh
from tests.fixtures.real_cluster import Cluster
from tests.fixtures.slack import fail_post_saying
from tests.integration.chatops import APPROVERS, ChatOps, write_policy
from tests.integration.test_worker_jobs import release_retries as release_scheduled_retries

A1, A2, _ = APPROVERS
NS = "shop"
NET, SEC = ("networking.istio.io", "v1beta1"), ("security.istio.io", "v1beta1")
APPS = ("apps", "v1", "deployments")
PDBS = ("policy", "v1", "poddisruptionbudgets")


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    return write_policy(tmp_path)


@pytest.fixture
def ops(mesh: Mesh) -> Iterator[ChatOps]:
    seed_shop(mesh.cluster)
    yield ChatOps.start(mesh)


def seed_shop(cluster: Cluster, labels: dict[str, str] | None = None) -> None:
    cluster.put_object("", "v1", "namespaces", {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NS, "labels": labels or {"istio-injection": "enabled"}}})
    for app in ("cart", "checkout"):
        cluster.put_object(*NET, "virtualservices", virtual_service(app, NS))
        cluster.put_object(*NET, "destinationrules", destination_rule(app, NS))
        obj = deployment(f"{app}-v1", {"app": app, "version": "v1"}, NS, replicas=2)
        obj["status"].update(observedGeneration=1, updatedReplicas=2)
        cluster.put_object(*APPS, obj)
        cluster.put_object(*PDBS, {
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": app, "namespace": NS},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}},
            "status": {"disruptionsAllowed": 1}})
    cluster.put_object(*SEC, "peerauthentications", {
        "apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": NS}, "spec": {"mtls": {"mode": "STRICT"}}})


def complete_rollout(cluster: Cluster, name: str) -> None:
    """What the Deployment controller reports once every pod is new and available."""
    def done(obj: dict[str, Any]) -> None:
        wanted = obj["spec"]["replicas"]
        obj["status"].update(observedGeneration=obj["metadata"]["generation"],
                             updatedReplicas=wanted, replicas=wanted, availableReplicas=wanted)
    cluster.change(*APPS, NS, name, done)


def set_disruptions(cluster: Cluster, pdb: str, allowed: int) -> None:
    cluster.change(*PDBS, NS, pdb, lambda obj: obj["status"].update(disruptionsAllowed=allowed))


def release_scheduled(mesh: Mesh) -> int:
    """Move the emergency's scheduled looks to their queue, as RQ's scheduler does when their
    time comes (the approval's expiry stays scheduled)."""
    released = 0
    for name in queue_names(Settings().queue_name):
        queue = Queue(name, connection=mesh.redis, serializer=JSONSerializer)
        registry = queue.scheduled_job_registry
        for job_id in registry.get_job_ids():
            if not job_id.startswith("emergency-"):
                continue
            job = queue.fetch_job(job_id)
            assert job is not None
            registry.remove(job)
            queue.enqueue_job(job)
            released += 1
    return released


def restarted(cluster: Cluster, name: str) -> bool:
    template = cluster.get(*APPS, NS, name)["spec"]["template"]
    return RESTARTED_AT in (template.get("metadata", {}).get("annotations") or {})


def start_emergency(ops: ChatOps, namespace: str = NS) -> str:
    ack, url = ops.command(f"emergency {namespace}")
    assert "Accepted" in ack
    ops.run()
    ts = ops.approval().ts
    assert "Needs 2 approvals" in ops.approval().text
    assert ops.react(A1, ts) == "counted"
    assert ops.react(A2, ts) == "quorum"
    ops.run()
    return url


def emergency_thread(ops: ChatOps) -> list[str]:
    roots = [m for m in ops.mesh.slack.roots(CHANNEL) if "*Emergency*" in m.text]
    assert len(roots) == 1, ops.roots()
    return ops.thread(roots[0].ts)


def get(cluster: Cluster, group: tuple[str, str], plural: str, name: str) -> Any:
    try:
        return cluster.get(*group, plural, NS, name)
    except KeyError:
        return None


def test_emergency_steps_in_order_then_one_restart_at_a_time(ops: ChatOps, mesh: Mesh) -> None:
    cluster = mesh.cluster
    start_emergency(ops)

    pa = cluster.get(*SEC, "peerauthentications", NS, "default")
    ns = cluster.get("", "v1", "namespaces", None, NS)
    assert pa["spec"]["mtls"]["mode"] == "PERMISSIVE"
    assert ns["metadata"]["labels"]["istio-injection"] == "disabled"
    # PERMISSIVE was written before injection was turned off (one cluster-wide revision).
    assert int(pa["metadata"]["resourceVersion"]) < int(ns["metadata"]["resourceVersion"])
    assert all(get(cluster, NET, plural, app) is None
               for plural in ("virtualservices", "destinationrules")
               for app in ("cart", "checkout"))
    [backup] = BackupStore(mesh.redis).latest()
    assert {o["metadata"]["name"] for o in backup.objects if o["kind"] == "VirtualService"} \
        == {"cart", "checkout"}  # taken before the routing went
    assert restarted(cluster, "cart-v1") and not restarted(cluster, "checkout-v1")

    thread = emergency_thread(ops)
    assert f"in namespace `{NS}` started by" in thread[0]
    assert thread[1].startswith(f"Step 1/5: :floppy_disk: backup `{backup.id}` taken")
    assert thread[2] == "Step 2/5: :unlock: mTLS: `default` set to PERMISSIVE."
    assert thread[3] == ("Step 3/5: :syringe: sidecar injection off: label `istio-injection` "
                         "enabled → disabled.")
    assert thread[4] == ("Step 4/5: :scissors: removed VirtualServices `cart`, `checkout`; "
                         "DestinationRules `cart`, `checkout`.")
    assert thread[5].startswith("Step 5/5: :recycle: restarting 2 Deployments one at a time")
    assert thread[6] == ":recycle: restarting `cart-v1` (1/2)."

    # Its rollout is not complete: the next one waits.
    assert release_scheduled(mesh) == 1
    ops.run()
    assert not restarted(cluster, "checkout-v1")
    # Complete, but its PodDisruptionBudget allows no disruption now: still waits.
    complete_rollout(cluster, "cart-v1")
    set_disruptions(cluster, "cart", 0)
    release_scheduled(mesh)
    ops.run()
    assert not restarted(cluster, "checkout-v1")
    set_disruptions(cluster, "cart", 1)
    release_scheduled(mesh)
    ops.run()
    assert restarted(cluster, "checkout-v1")
    complete_rollout(cluster, "checkout-v1")
    release_scheduled(mesh)
    ops.run()
    assert release_scheduled(mesh) == 0  # finished: nothing more is scheduled

    thread = emergency_thread(ops)
    assert thread[7].startswith(f":white_check_mark: Approved by <@{A1}> and <@{A2}>")
    assert thread[8:] == [
        ":white_check_mark: `cart-v1` restarted and ready (1/2).",
        ":recycle: restarting `checkout-v1` (2/2).",
        ":white_check_mark: `checkout-v1` restarted and ready (2/2).",
        f":white_check_mark: Emergency in `{NS}` complete: 2 Deployments restarted without "
        "sidecars.",
    ]


def test_a_step_slack_refused_to_hear_is_said_in_order_once(
        ops: ChatOps, mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slack answers 500 to step 2's report, after PERMISSIVE was written: the job goes on
    (its retry would skip the step, done, and never say it); the thread hears every step once,
    in order, when the ticker delivers what Slack is owed."""
    fail_post_saying(mesh.slack, monkeypatch, "Step 2/5")
    start_emergency(ops)
    cluster = mesh.cluster
    assert cluster.get(*SEC, "peerauthentications", NS, "default")["spec"]["mtls"][
        "mode"] == "PERMISSIVE"
    assert restarted(cluster, "cart-v1")
    deliver_owed(context.current())  # the ticker's duty: what Slack is owed

    steps = [t for t in emergency_thread(ops) if t.startswith("Step ")]
    assert [t[:8] for t in steps] == [f"Step {n}/5" for n in range(1, 6)], steps
    assert steps[1] == "Step 2/5: :unlock: mTLS: `default` set to PERMISSIVE."
    assert emergency_thread(ops).count(":recycle: restarting `cart-v1` (1/2).") == 1


def test_the_approvers_named_after_the_work_though_slack_refused_it_once(
        ops: ChatOps, mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slack answers 500 to "Approved by …" in the emergency's thread, said after the approved
    work ran: the work is not run again or refused, and the approvers are named once."""
    fail_post_saying(mesh.slack, monkeypatch, ":white_check_mark: Approved by")
    url = start_emergency(ops)
    release_scheduled_retries(mesh.redis)  # RQ's retry, if any, as its time comes
    ops.run()
    deliver_owed(context.current())

    thread = emergency_thread(ops)
    assert sum(t.startswith(":white_check_mark: Approved by") for t in thread) == 1, thread
    assert [t[:8] for t in thread if t.startswith("Step ")] == [f"Step {n}/5" for n in
                                                               range(1, 6)], thread
    assert thread.count(":recycle: restarting `cart-v1` (1/2).") == 1, thread
    assert not [t for t in ops.told(url) if "Refused" in t or "Not run" in t], ops.told(url)


def test_a_rollout_past_its_deadline_stops_the_procedure(ops: ChatOps, mesh: Mesh) -> None:
    start_emergency(ops)
    [key] = mesh.redis.keys("meshbot:emergency:*")
    name = key.decode() if isinstance(key, bytes) else key
    request_id = name.removeprefix("meshbot:emergency:")
    later = time.time() + emergency.ROLLOUT_DEADLINE_S + 1
    assert emergency.advance(context.current(), request_id, later) == "stopped"
    assert emergency_thread(ops)[-1].startswith(
        ":warning: Stopped: `cart-v1` is not ready after 10m (the controller has not picked up "
        "the restart yet). Not restarted: `checkout-v1`.")
    release_scheduled(mesh)
    ops.run()
    assert not restarted(mesh.cluster, "checkout-v1")


def test_revision_labelled_namespace_loses_its_revision(ops: ChatOps, mesh: Mesh) -> None:
    mesh.cluster.change("", "v1", "namespaces", None, NS,
                        lambda ns: ns["metadata"].update(labels={"istio.io/rev": "1-20"}))
    start_emergency(ops)
    labels = mesh.cluster.get("", "v1", "namespaces", None, NS)["metadata"]["labels"]
    assert "istio.io/rev" not in labels and "istio-injection" not in labels
    assert "Step 3/5: :syringe: sidecar injection off: label `istio.io/rev=1-20` removed." \
        in emergency_thread(ops)


def test_a_namespace_without_peer_authentication_gets_a_valid_permissive_one(
        ops: ChatOps, mesh: Mesh) -> None:
    mesh.cluster.delete(*SEC, "peerauthentications", NS, "default")  # as its admin would
    start_emergency(ops)
    created = mesh.cluster.get(*SEC, "peerauthentications", NS, "default")
    model = istio_security.PeerAuthentication.model_validate(created)
    assert model.spec is not None
    # Istio's published model knows every field written (it would drop an unknown one).
    assert model.spec.model_dump(by_alias=True, exclude_none=True, mode="json") == \
        created["spec"] == {"mtls": {"mode": "PERMISSIVE"}}
    assert "Step 2/5: :unlock: mTLS: `default` created as PERMISSIVE." in emergency_thread(ops)


def test_meshbots_own_namespace_is_refused_and_untouched(ops: ChatOps, mesh: Mesh) -> None:
    before = mesh.cluster.get("", "v1", "namespaces", None, "meshbot")
    _, url = ops.command("emergency meshbot")
    ops.run()  # refused before approvers are asked: there is nothing they could approve
    assert not [m for m in mesh.slack.roots(CHANNEL) if "Approval needed" in m.text]
    assert any("`meshbot` is meshbot's own namespace: emergency never touches it" in t
               for t in ops.told(url)), ops.told(url)
    assert mesh.cluster.get("", "v1", "namespaces", None, "meshbot") == before
    assert not [m for m in mesh.slack.roots(CHANNEL) if "*Emergency*" in m.text]
    assert BackupStore(mesh.redis).latest() == []


def test_without_approvals_nothing_happens(ops: ChatOps, mesh: Mesh) -> None:
    ack, _ = ops.command(f"emergency {NS}", user="U0SOMEONE")
    assert "may not run `/mesh emergency`" in ack
    ops.command(f"emergency {NS}")
    ops.run()
    assert "Approval needed" in ops.approval().text
    assert mesh.cluster.get(*SEC, "peerauthentications", NS, "default")["spec"]["mtls"] == {
        "mode": "STRICT"}
    assert get(mesh.cluster, NET, "virtualservices", "cart") is not None
    assert not restarted(mesh.cluster, "cart-v1")
