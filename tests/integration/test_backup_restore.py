"""`/mesh backup`, `/mesh backups` and `/mesh restore` through the bot's listener, a real RQ
worker, Redis, the real kube-apiserver (meshbot under the chart's RBAC) and the Slack
stand-in."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.adapters.audit import AuditLog
from jobs.adapters.backup_store import BackupStore
from jobs.domain.backup_diff import KINDS, managed_view
from jobs.runtime import context
from jobs.runtime.reports import deliver_owed
from tests.fixtures.meshbot import CHANNEL, OPERATOR, EmulatedMesh, Mesh
from tests.fixtures.real_cluster import Cluster
from tests.fixtures.slack import fail_post_saying
from tests.integration.chatops import APPROVERS, ChatOps, write_policy
from tests.integration.test_worker_jobs import release_retries

A1, A2, _ = APPROVERS
NS = "production"
NET, SEC = ("networking.istio.io", "v1beta1"), ("security.istio.io", "v1beta1")
PLURALS = {k.kind: k.plural for k in KINDS}
GROUPS = {"VirtualService": NET, "DestinationRule": NET, "Gateway": NET,
          "PeerAuthentication": SEC, "AuthorizationPolicy": SEC}


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    return write_policy(tmp_path)


@pytest.fixture
def ops(mesh: Mesh) -> Iterator[ChatOps]:
    seed_security_and_gateway(mesh.cluster)
    yield ChatOps.start(mesh)


def seed_security_and_gateway(cluster: Cluster) -> None:
    """The sample mesh has VirtualServices and DestinationRules; add the other three kinds."""
    cluster.put_object(*NET, "gateways", {
        "apiVersion": "networking.istio.io/v1beta1", "kind": "Gateway",
        "metadata": {"name": "public", "namespace": NS},
        "spec": {"selector": {"istio": "ingressgateway"},
                 "servers": [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                              "hosts": ["shop.example.com"]}]}})
    cluster.put_object(*SEC, "peerauthentications", {
        "apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": NS, "labels": {"owner": "mesh-team"}},
        "spec": {"mtls": {"mode": "STRICT"}}})
    cluster.put_object(*SEC, "authorizationpolicies", {
        "apiVersion": "security.istio.io/v1beta1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "allow-scanner", "namespace": NS},
        "spec": {"rules": [{"from": [{"source": {
            "principals": ["cluster.local/ns/security/sa/scanner"]}}]}]}})


def live(cluster: Cluster, kind: str, name: str) -> dict[str, Any] | None:
    try:
        return cluster.get(*GROUPS[kind], PLURALS[kind], NS, name)
    except KeyError:
        return None


def backup(ops: ChatOps, namespace: str = NS) -> str:
    ack, _ = ops.command(f"backup {namespace}")
    assert "Accepted" in ack
    ops.run()
    text = ops.roots()[-1]
    match = re.search(r"\*Backup\* `([^`]+)`", text)
    assert match, text
    return match.group(1)


def approve(ops: ChatOps) -> None:
    """The newest approval request gets its two approvals; the work runs."""
    ts = ops.approval().ts
    assert ops.react(A1, ts) == "counted"
    assert ops.react(A2, ts) == "quorum"
    ops.run()


def restore_thread(ops: ChatOps) -> list[str]:
    roots = [m for m in ops.mesh.slack.roots(CHANNEL) if "*Restore" in m.text]
    assert roots, ops.roots()
    return ops.thread(roots[-1].ts)


def test_backup_is_kept_in_redis_without_server_metadata(ops: ChatOps, mesh: Mesh) -> None:
    backup_id = backup(ops)
    text = ops.roots()[-1]
    assert f"namespace `{NS}` taken by <@{OPERATOR}>" in text
    assert ("9 VirtualServices, 9 DestinationRules, 1 Gateway, 1 PeerAuthentication, "
            "1 AuthorizationPolicy") in text
    assert f"`/mesh restore {backup_id} dry-run`" in text
    kept = BackupStore(mesh.redis).get(backup_id)
    assert kept is not None and kept.namespace == NS and kept.user == OPERATOR
    assert mesh.redis.exists(f"meshbot:backup:{backup_id}")
    for obj in kept.objects:
        assert not {"resourceVersion", "uid", "creationTimestamp", "generation",
                    "managedFields"} & set(obj["metadata"]), obj["metadata"]
        assert "status" not in obj


def test_backups_lists_id_namespace_who_and_counts(ops: ChatOps, mesh: Mesh) -> None:
    first, second = backup(ops), backup(ops, "staging")
    ack, _ = ops.command("backups", user="U0SOMEONE")  # reading the list is for everyone
    assert "Accepted" in ack
    ops.run()
    listing = ops.roots()[-1]
    assert listing.startswith(":floppy_disk: *Backups* (newest first, 2)")
    assert listing.index(second) < listing.index(first)
    assert f"`{first}` — namespace `production`" in listing
    assert f"`{second}` — namespace `staging`" in listing and "0 VirtualServices" in listing
    assert listing.count(f"by <@{OPERATOR}>") == 2


def test_backup_change_restore_ends_identical(ops: ChatOps, mesh: Mesh) -> None:
    backup_id = backup(ops)
    saved = BackupStore(mesh.redis).get(backup_id)
    assert saved is not None

    def shift(vs: dict[str, Any]) -> None:
        vs["spec"]["http"][0]["route"][0]["weight"] = 40
        vs["spec"]["http"][0]["route"][1]["weight"] = 60
        vs["spec"]["http"][0]["timeout"] = "1s"
        vs["metadata"].setdefault("labels", {})["edited"] = "yes"

    mesh.cluster.change(*NET, "virtualservices", NS, "payment-service", shift)
    mesh.cluster.change(*SEC, "peerauthentications", NS, "default",
                        lambda pa: pa["spec"].update(mtls={"mode": "PERMISSIVE"}))
    mesh.cluster.change(*NET, "gateways", NS, "public",
                        lambda gw: gw["spec"]["servers"][0].update(hosts=["other.example.com"]))
    # Someone deletes a DestinationRule (kubectl delete, as the runbook's emergency does).
    mesh.cluster.delete(*NET, "destinationrules", NS, "user-service")

    ack, _ = ops.command(f"restore {backup_id}")
    assert "Accepted" in ack
    ops.run()
    assert "Needs 2 approvals" in ops.approval().text
    assert live(mesh.cluster, "DestinationRule", "user-service") is None  # not before approval
    approve(ops)

    for obj in saved.objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        current = live(mesh.cluster, kind, name)
        assert current is not None, (kind, name)
        if kind in ("VirtualService", "DestinationRule", "PeerAuthentication"):
            assert managed_view(current) == managed_view(obj), (kind, name)
    gateway = live(mesh.cluster, "Gateway", "public")
    assert gateway is not None and gateway["spec"]["servers"][0]["hosts"] == ["other.example.com"]

    thread = "\n".join(restore_thread(ops))
    assert "VirtualService `payment-service`: changed (`metadata.labels.edited`, " \
           "`spec.http[0].route[0].weight`, `spec.http[0].route[1].weight`, " \
           "`spec.http[0].timeout`)" in thread
    assert "DestinationRule `user-service`: created" in thread
    assert "PeerAuthentication `default`: changed (`spec.mtls.mode`)" in thread
    assert "Gateway `public`: changed (`spec.servers[0].hosts[0]`) — not restored" in thread
    assert "Gateways and AuthorizationPolicies are kept in the backup but not restored" in thread
    assert "VirtualService `order-service`: unchanged" in thread
    assert "Restored: created `DestinationRule/user-service`; updated " \
           "`VirtualService/payment-service`, `PeerAuthentication/default`" in thread


def test_a_restore_slack_refused_to_report_is_reported_once_as_done(
        ops: ChatOps, mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slack answers 500 to "Restored: …", after the writes: the job is not run again (which
    would find them made and report a restore of nothing); the report is owed and said once,
    and the audit records what was restored, once."""
    backup_id = backup(ops)
    mesh.cluster.delete(*NET, "destinationrules", NS, "user-service")
    fail_post_saying(mesh.slack, monkeypatch, ":white_check_mark: Restored:")
    ops.command(f"restore {backup_id}")
    ops.run()
    approve(ops)
    assert live(mesh.cluster, "DestinationRule", "user-service") is not None
    deliver_owed(context.current())  # the ticker's duty: what Slack is owed

    thread = restore_thread(ops)
    done = [t for t in thread if t.startswith(":white_check_mark: Restored:")
            or "Nothing to restore" in t]
    assert len(done) == 1, thread
    assert done[0].startswith(":white_check_mark: Restored: created "
                              "`DestinationRule/user-service` ("), done
    entries = [e for e in AuditLog(mesh.redis).last(backup_id, 10) if e.action == "restore"
               and e.outcome == "done"]
    assert [(e.before, e.after) for e in entries] == [("1 differed", "created 1, updated 0")]


def test_restore_dry_run_changes_nothing(ops: ChatOps, mesh: Mesh) -> None:
    backup_id = backup(ops)
    mesh.cluster.change(*NET, "virtualservices", NS, "auth-service",
                        lambda vs: vs["spec"]["http"][0]["route"][0].update(weight=70))
    before = live(mesh.cluster, "VirtualService", "auth-service")
    ops.command(f"restore {backup_id} dry-run")
    ops.run()  # a dry run changes nothing, so it asks no approvals
    thread = "\n".join(restore_thread(ops))
    assert "*Restore dry run*" in thread
    assert "VirtualService `auth-service`: changed (`spec.http[0].route[0].weight`)" in thread
    assert "Dry run: a restore would create 0 and update 1 objects. Nothing was changed." in thread
    assert live(mesh.cluster, "VirtualService", "auth-service") == before


def test_restore_of_an_unknown_backup_is_refused_and_changes_nothing(
        ops: ChatOps, mesh: Mesh) -> None:
    _, url = ops.command("restore production-20990101-000000-ffff")
    ops.run()  # refused before approvers are asked: there is nothing to approve
    told = ops.told(url)
    assert any("there is no backup `production-20990101-000000-ffff`" in t for t in told), told
    assert not [m for m in mesh.slack.roots(CHANNEL) if "*Restore" in m.text]
    assert not [m for m in mesh.slack.roots(CHANNEL) if "Approval needed" in m.text]


def test_backup_refusals(ops: ChatOps, mesh: Mesh) -> None:
    ack, _ = ops.command(f"backup {NS}", user="U0SOMEONE")
    assert "may not run `/mesh backup`" in ack
    ack, url = ops.command("backup no-such-namespace")
    ops.run()
    assert any("namespace `no-such-namespace` does not exist" in t for t in ops.told(url))
    assert BackupStore(mesh.redis).latest() == []
    assert ops.roots() == []


def test_a_restore_retried_after_a_failed_write_reports_every_object_it_restored(
        emulated_mesh: EmulatedMesh) -> None:
    """The Kubernetes API answers 500 to the restore's second write (the first, a create,
    landed): RQ runs it again, and the retry finds one object left to restore. The thread shows
    the diff once, and the report and the audit name both objects restored — not only the one
    the retry wrote."""
    mesh = emulated_mesh
    seed_security_and_gateway(mesh.cluster)
    ops = ChatOps.start(mesh)
    backup_id = backup(ops)
    mesh.cluster.delete(*NET, "destinationrules", NS, "user-service")
    mesh.cluster.change(*SEC, "peerauthentications", NS, "default",
                        lambda pa: pa["spec"].update(mtls={"mode": "PERMISSIVE"}))
    mesh.cluster.fail(500, method="PUT", plural="peerauthentications", name="default")
    ops.command(f"restore {backup_id}")
    ops.run()
    approve(ops)
    while release_retries(mesh.redis):
        ops.run()

    assert live(mesh.cluster, "DestinationRule", "user-service") is not None
    restored = live(mesh.cluster, "PeerAuthentication", "default")
    assert restored is not None and restored["spec"]["mtls"]["mode"] == "STRICT"
    thread = restore_thread(ops)
    diffs = [t for t in thread if t.startswith("Backup compared with the live objects:")]
    assert len(diffs) == 1, thread
    assert "DestinationRule `user-service`: created" in diffs[0]
    assert "PeerAuthentication `default`: changed (`spec.mtls.mode`)" in diffs[0]
    done = [t for t in thread if t.startswith(":white_check_mark: Restored:")]
    assert len(done) == 1, thread
    assert done[0].startswith(":white_check_mark: Restored: created "
                              "`DestinationRule/user-service`; updated "
                              "`PeerAuthentication/default`"), done
    entries = [e for e in AuditLog(mesh.redis).last(backup_id, 10) if e.action == "restore"
               and e.outcome == "done"]
    assert [(e.before, e.after) for e in entries] == [("2 differed", "created 1, updated 1")]
