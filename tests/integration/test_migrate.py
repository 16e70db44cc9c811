"""`/mesh migrate` as a person uses it, on the real kube-apiserver (meshbot under the chart's
RBAC), a real Redis and the Slack stand-in: commands through the bot's real listener, jobs on a
real RQ worker, and the workflow moved on by the ticker's duty (``advance_all``) called as the
ticker calls it; the test plays the Deployment controller (``tests.fixtures.controller``).

Phases 3 and 4 watch Prometheus: they are in ``tests/e2e/test_migrate_flow.py``."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.adapters.audit import AuditLog
from jobs.adapters.locks import Freeze, Locks
from jobs.adapters.migration_store import MigrationStore
from jobs.adapters.rollout_store import RolloutStore
from jobs.domain import rollout as machine
from jobs.domain.migration import Status, Workflow
from jobs.domain.rollout import Phase
from jobs.runtime import context
from jobs.runtime.migration import advance_all
from jobs.runtime.reports import deliver_owed
from playground.deployment_controller import settle_rollouts
from playground.sample_mesh import TIERS, deployment
from tests.fixtures.killed_worker import killed_while_saying
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh, MeshBase
from tests.fixtures.real_cluster import RealCluster
from tests.fixtures.slack import fail_post_saying
from tests.integration.chatops import APPROVERS, ChatOps, write_policy
from tests.integration.test_istio_models import assert_valid_istio
from tests.integration.test_readiness import seed_ready_control_plane
from tests.integration.test_worker_jobs import release_retries

NS = "production"
INJECT = "sidecar.istio.io/inject"
A1, A2, _ = APPROVERS


def write_migrate_policy(directory: Path, **migrate: Any) -> Path:
    path = write_policy(directory)
    data = yaml.safe_load(path.read_text())
    data["permissions"]["migrate"] = ["operators"]
    data["migrate"] = {"watch": "6s", "critical_watch": "6s", "error_threshold": 1.0, **migrate}
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def policy_path(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    path = write_migrate_policy(tmp_path)
    data = yaml.safe_load(path.read_text())
    data.update(getattr(request, "param", {}))  # top-level keys a test sets
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def ops(mesh: Mesh) -> Iterator[ChatOps]:
    yield ChatOps.start(mesh)


def snapshot(mesh: Mesh) -> dict[str, Any]:
    """What a migration may write of every object (the controller writes only status)."""
    cluster = mesh.cluster
    found: dict[str, Any] = {}
    for group, version, plural in (("apps", "v1", "deployments"),
                                   ("networking.istio.io", "v1beta1", "virtualservices"),
                                   ("networking.istio.io", "v1beta1", "destinationrules"),
                                   ("security.istio.io", "v1beta1", "peerauthentications"),
                                   ("telemetry.istio.io", "v1", "telemetries")):
        for obj in cluster.list(group, version, plural, NS):
            meta = obj["metadata"]
            found[f"{plural}/{meta['name']}"] = (meta.get("labels"), meta.get("annotations"),
                                                 obj.get("spec"))
    found["namespace"] = cluster.get("", "v1", "namespaces", None, NS)["metadata"]["labels"]
    return found


def workflow(mesh: MeshBase) -> Workflow | None:
    return MigrationStore(mesh.redis).get(NS)


def drive(ops: ChatOps, until: Callable[[Workflow], bool], timeout: float = 60.0,
          approve: bool = True, controller: bool = True) -> Workflow:
    """Be the ticker (advance every workflow), the Deployment controller and the approvers,
    until ``until`` holds for the workflow."""
    ctx = context.current()
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        advance_all(ctx, None, owner="test-ticker")
        ops.run()  # the approval requests the workflow submitted
        if approve:
            for message in ops.mesh.slack.roots(CHANNEL):
                if "Approval needed" in message.text and message.ts not in seen:
                    seen.add(message.ts)
                    for approver in (A1, A2):
                        ops.react(approver, message.ts)
            ops.run()
        assert isinstance(ops.mesh.cluster, RealCluster)
        if controller:
            settle_rollouts(ops.mesh.cluster)
        current = workflow(ops.mesh)
        assert current is not None
        if until(current):
            return current
    raise AssertionError(f"within {timeout}s the workflow did not get there: {workflow(ops.mesh)}")


def thread_of(ops: ChatOps) -> list[str]:
    roots = [m for m in ops.mesh.slack.roots(CHANNEL) if "*Migration" in m.text]
    assert roots, ops.roots()
    return ops.thread(roots[-1].ts)


def template_annotations(mesh: Mesh, name: str) -> dict[str, str]:
    found = mesh.cluster.get("apps", "v1", "deployments", NS, name)
    return dict(found["spec"]["template"]["metadata"].get("annotations") or {})


# --- dry run and refusals -------------------------------------------------------------------------


def test_dry_run_posts_the_plan_and_changes_nothing(ops: ChatOps, mesh: Mesh) -> None:
    before = snapshot(mesh)
    ack, _ = ops.command(f"migrate {NS} dry-run")
    assert "Accepted" in ack or "accepted" in ack.lower(), ack
    ops.run()
    texts = thread_of(ops)
    root = texts[0]
    assert "Migration plan (dry run)" in root and "Nothing was changed" in root
    assert "in order: `health-checker`, `logging-service`, `metrics-collector`" in root
    assert "in order: `auth-service`, `order-service`, `payment-service`" in root
    assert "cut-over of `payment-service` to green: 2" in root
    assert "phase 5 finalize: 1" in root
    block = "\n".join(texts[1:])
    assert "update Deployment production/logging-service-v1" in block
    assert "create Deployment production/payment-service-v1-green" in block
    assert "delete Deployment production/payment-service-v1" in block
    assert "create Telemetry production/production-telemetry" in block
    assert snapshot(mesh) == before
    assert workflow(mesh) is None
    assert AuditLog(mesh.redis).last(NS, 1)[0].outcome == "dry-run"


@pytest.mark.parametrize(("text", "expected"), [
    ("migrate meshbot", "meshbot's own namespace"),
    ("migrate nowhere", "does not exist"),
    ("migrate staging", "no service of meshbot's policy lives in namespace `staging`"),
    (f"migrate {NS} phase=6", "out of range"),
    (f"migrate {NS} force=maybe", "the only force is force=yes"),
    (f"migrate {NS} pause", f"no migration of `{NS}` is running"),
])
def test_refused_with_nothing_changed(ops: ChatOps, mesh: Mesh, text: str,
                                      expected: str) -> None:
    before = snapshot(mesh)
    ack, url = ops.command(text)
    ops.run()
    told = " ".join([ack, *ops.told(url)])
    assert expected in told, told
    assert snapshot(mesh) == before
    assert workflow(mesh) is None


def test_a_deployment_without_an_app_label_is_refused(ops: ChatOps, mesh: Mesh) -> None:
    stray = deployment("batch-job", {"app": "batch-job"}, NS)
    del stray["metadata"]["labels"]["app"]
    mesh.cluster.put_object("apps", "v1", "deployments", stray)
    _, url = ops.command(f"migrate {NS}")
    ops.run()
    assert "`batch-job`" in " ".join(ops.told(url)) and "no `app` label" in " ".join(
        ops.told(url))
    assert workflow(mesh) is None


def test_a_gitops_owned_deployment_is_refused(ops: ChatOps, mesh: Mesh) -> None:
    mesh.cluster.change("apps", "v1", "deployments", NS, "health-checker-v1",
                        lambda d: d["metadata"]["labels"].update(
                            {"argocd.argoproj.io/instance": "shop"}))
    before = snapshot(mesh)
    _, url = ops.command(f"migrate {NS} phase=2")
    ops.run()
    assert "Argo CD" in " ".join(ops.told(url))
    assert snapshot(mesh) == before and workflow(mesh) is None


def own_peer_authentication(mesh: Mesh) -> None:
    mesh.cluster.put_object("security.istio.io", "v1beta1", "peerauthentications", {
        "apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": NS,
                     "labels": {"argocd.argoproj.io/instance": "mesh-config"}},
        "spec": {"mtls": {"mode": "PERMISSIVE"}}})


def test_a_gitops_owned_peer_authentication_is_refused(ops: ChatOps, mesh: Mesh) -> None:
    own_peer_authentication(mesh)
    before = snapshot(mesh)
    _, url = ops.command(f"migrate {NS} phase=5")
    ops.run()
    told = " ".join(ops.told(url))
    assert "PeerAuthentication production/default is managed by Argo CD" in told, told
    assert snapshot(mesh) == before and workflow(mesh) is None


@pytest.mark.parametrize("policy_path", [{"gitops_allowed": True}], indirect=True)
def test_gitops_owned_objects_are_changed_when_the_policy_allows(ops: ChatOps,
                                                                 mesh: Mesh) -> None:
    own_peer_authentication(mesh)
    ops.command(f"migrate {NS} phase=5")
    ops.run()
    assert drive(ops, lambda w: not w.status.active).status is Status.DONE
    peer = mesh.cluster.get("security.istio.io", "v1beta1", "peerauthentications", NS,
                            "default")
    assert peer["spec"]["mtls"]["mode"] == "STRICT"


def test_a_second_migration_of_the_namespace_is_refused(ops: ChatOps, mesh: Mesh) -> None:
    ops.command(f"migrate {NS} phase=2")
    ops.run()
    first = workflow(mesh)
    assert first is not None and first.status is Status.RUNNING
    _, url = ops.command(f"migrate {NS}", user="U0OPERATOR2")
    ops.run()
    assert "already running" in " ".join(ops.told(url, user="U0OPERATOR2"))
    assert workflow(mesh) == first


# --- phases 1, 2 and 5 ----------------------------------------------------------------------------


def test_a_failing_readiness_gate_stops_with_the_table(ops: ChatOps, mesh: Mesh) -> None:
    before = snapshot(mesh)
    ops.command(f"migrate {NS}")
    ops.run()
    done = drive(ops, lambda w: not w.status.active)
    assert done.status is Status.STOPPED and "readiness gate" in done.note
    gate = next(t for t in thread_of(ops) if "Phase 1: readiness gate" in t)
    assert ":x: ingress gateway replicas >= 2" in gate and "force=yes" in gate
    assert snapshot(mesh) == before


def test_phase_2_injects_the_pilots_one_at_a_time(ops: ChatOps, mesh: Mesh) -> None:
    ops.command(f"migrate {NS} phase=2")
    ops.run()
    done = drive(ops, lambda w: not w.status.active)
    assert done.status is Status.DONE, done
    for service in TIERS["pilot"]:
        for version in ("v1", "v2"):
            assert template_annotations(mesh, f"{service}-{version}") == {INJECT: "true"}
    for service in TIERS["core"] + TIERS["critical"]:
        assert template_annotations(mesh, f"{service}-v1") == {}
    texts = thread_of(ops)
    migrated = [t for t in texts if "migrated (phase 2)" in t]
    assert [t.split("`")[1] for t in migrated] == sorted(TIERS["pilot"])
    assert "2 ready pods with the sidecar" in migrated[0]
    status = mesh.slack.message(CHANNEL, done.status_ts).text
    assert "Migration of `production`: done" in status
    entries = [e for e in AuditLog(mesh.redis).last("logging-service", 10)
               if e.action == "migrate"]
    assert {e.detail for e in entries} == {
        f"{INJECT}=true on Deployment production/logging-service-v1",
        f"{INJECT}=true on Deployment production/logging-service-v2"}


def test_the_status_message_is_kept_when_the_workflow_moves_on_while_slack_answers(
        ops: ChatOps, mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ticker may advance a workflow the moment it exists, before Slack has answered the post
    of its status message: the status message's ts must still be recorded, or it is never
    edited again."""
    workspace = mesh.slack
    post = workspace.post

    def post_while_the_ticker_moves_on(channel: str, text: str, **kwargs: Any) -> Any:
        if "*Migration of `production`:" in text:
            store = MigrationStore(mesh.redis)
            current = store.get(NS)
            assert current is not None
            assert store.save(current.model_copy(update={"note": "moved on by the ticker"}))
        return post(channel, text, **kwargs)

    monkeypatch.setattr(workspace, "post", post_while_the_ticker_moves_on)
    ops.command(f"migrate {NS} phase=2")
    ops.run()
    started = workflow(mesh)
    assert started is not None and started.status_ts, started
    assert started.note == "moved on by the ticker"  # the other write stands
    monkeypatch.undo()
    done = drive(ops, lambda w: not w.status.active)
    assert "Migration of `production`: done" in mesh.slack.message(CHANNEL, done.status_ts).text


@pytest.mark.parametrize("policy_path", [{"migrate": {
    "watch": "6s", "critical_watch": "6s", "error_threshold": 1.0, "rollout_timeout": "1s"}}],
    indirect=True)
def test_a_rollout_not_complete_within_the_policys_timeout_is_undone(ops: ChatOps,
                                                                     mesh: Mesh) -> None:
    """No controller completes the rollouts here: past ``migrate.rollout_timeout`` the first
    pilot's injection is undone and the workflow stops, saying so."""
    ops.command(f"migrate {NS} phase=2")
    ops.run()
    stopped = drive(ops, lambda w: not w.status.active, timeout=30, controller=False)
    assert stopped.status is Status.STOPPED, stopped
    assert "rollout not complete after 1s" in stopped.note, stopped.note
    first, *later = sorted(TIERS["pilot"])
    for version in ("v1", "v2"):
        assert template_annotations(mesh, f"{first}-{version}") == {}  # put back
    assert all(template_annotations(mesh, f"{s}-v1") == {} for s in later)  # never touched


def test_phase_5_finalizes_with_the_namespace_approval(ops: ChatOps, mesh: Mesh) -> None:
    mesh.cluster.change("", "v1", "namespaces", None, NS,
                        lambda ns: ns["metadata"]["labels"].pop("istio-injection"))
    ops.command(f"migrate {NS} phase=5")
    ops.run()
    waiting = drive(ops, lambda w: "waiting for 1 approval" in w.note, approve=False)
    assert waiting.cursor == 0
    request = ops.approval().text
    assert "the migration goes on: finalizing `production`" in request
    assert "create Telemetry production/production-telemetry" in request  # what it will write
    assert "istio-injection" not in mesh.cluster.get("", "v1", "namespaces", None, NS)[
        "metadata"]["labels"]
    done = drive(ops, lambda w: not w.status.active)
    assert done.status is Status.DONE, done
    labels = mesh.cluster.get("", "v1", "namespaces", None, NS)["metadata"]["labels"]
    assert labels["istio-injection"] == "enabled"
    peer = mesh.cluster.get("security.istio.io", "v1beta1", "peerauthentications", NS,
                            "default")
    assert peer["spec"] == {"mtls": {"mode": "STRICT"}}
    rule = mesh.cluster.get("networking.istio.io", "v1beta1", "destinationrules", NS, "default")
    assert rule["spec"] == {"host": "*.local", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}
    assert_valid_istio(rule)
    for service in TIERS["pilot"]:
        own = mesh.cluster.get("networking.istio.io", "v1beta1", "destinationrules", NS, service)
        assert own["spec"]["trafficPolicy"]["tls"]["mode"] == "ISTIO_MUTUAL"
    telemetry = mesh.cluster.get("telemetry.istio.io", "v1", "telemetries", NS,
                                 "production-telemetry")
    assert telemetry["spec"] == {
        "metrics": [{"providers": [{"name": "prometheus"}]}],
        "tracing": [{"providers": [{"name": "jaeger"}]}],
        "accessLogging": [{"providers": [{"name": "otel"}]}]}
    assert any("Approved by" in t for t in thread_of(ops))


def test_phase_5_keeps_a_revision_label(ops: ChatOps, mesh: Mesh) -> None:
    def revision(ns: dict[str, Any]) -> None:
        ns["metadata"]["labels"].pop("istio-injection")
        ns["metadata"]["labels"]["istio.io/rev"] = "1-22"

    mesh.cluster.change("", "v1", "namespaces", None, NS, revision)
    ops.command(f"migrate {NS} phase=5")
    ops.run()
    assert drive(ops, lambda w: not w.status.active).status is Status.DONE
    labels = mesh.cluster.get("", "v1", "namespaces", None, NS)["metadata"]["labels"]
    assert labels["istio.io/rev"] == "1-22" and "istio-injection" not in labels
    assert any("kept `istio.io/rev=1-22`" in t for t in thread_of(ops))


def test_a_forced_gate_needs_the_emergency_approvals(ops: ChatOps, mesh: Mesh) -> None:
    ops.command(f"migrate {NS} phase=1 force=yes")
    ops.run()
    waiting = drive(ops, lambda w: "waiting for 2 approvals" in w.note, approve=False)
    assert waiting.status is Status.RUNNING
    done = drive(ops, lambda w: not w.status.active)
    assert done.status is Status.DONE
    assert any("forced past with approvals" in t for t in thread_of(ops))


def test_pause_holds_the_workflow_and_resume_goes_on(ops: ChatOps, mesh: Mesh) -> None:
    seed_ready_control_plane(mesh.cluster, ("zone-a", "zone-b", "zone-c"))
    ops.command(f"migrate {NS} phase=2")
    ops.run()
    ops.command(f"migrate {NS} pause")
    ops.run()
    paused = workflow(mesh)
    assert paused is not None and paused.status is Status.PAUSED
    before = copy.deepcopy(snapshot(mesh))
    held = drive(ops, lambda w: w.note == "paused")
    assert held.cursor == 0 and snapshot(mesh) == before
    ops.command(f"migrate {NS} resume")
    ops.run()
    assert drive(ops, lambda w: not w.status.active).status is Status.DONE
    assert any(f"paused by <@{OPERATOR}>" in t for t in thread_of(ops))


def test_a_pause_slack_refused_to_report_is_said_once_and_holds(
        ops: ChatOps, mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slack answers 500 to "paused by …", said after the workflow was paused: the job is not
    failed (its retry would find it paused and refuse: "cannot be paused"); the thread hears it
    once and the audit says paused, once."""
    ops.command(f"migrate {NS} phase=2")
    ops.run()
    fail_post_saying(mesh.slack, monkeypatch, f"paused by <@{OPERATOR}>")
    _, url = ops.command(f"migrate {NS} pause")
    ops.run()
    while release_retries(mesh.redis):  # RQ's retry, if any, as its time comes
        ops.run()
    paused = workflow(mesh)
    assert paused is not None and paused.status is Status.PAUSED
    deliver_owed(context.current())  # the ticker's duty: what Slack is owed

    assert sum(f"paused by <@{OPERATOR}>" in t for t in thread_of(ops)) == 1, thread_of(ops)
    assert not [t for t in ops.told(url) if "Refused" in t], ops.told(url)
    assert [e.outcome for e in AuditLog(mesh.redis).last(NS, 20)].count("pause") == 1


def test_a_pause_whose_worker_died_before_saying_it_is_said_once_and_holds(
        ops: ChatOps, mesh: Mesh, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The worker pausing the workflow is SIGKILLed while "paused by …" is on the wire: the
    job taken over finds the workflow paused by itself, and says and audits the pause once
    (it used to refuse: "cannot be paused", with the pause never said)."""
    ops.command(f"migrate {NS} phase=2")
    ops.run()
    _, url = ops.command(f"migrate {NS} pause")
    killed_while_saying(mesh, monkeypatch, tmp_path, f"paused by <@{OPERATOR}>")
    ops.run()
    while release_retries(mesh.redis):
        ops.run()
    paused = workflow(mesh)
    assert paused is not None and paused.status is Status.PAUSED

    assert sum(f"paused by <@{OPERATOR}>" in t for t in thread_of(ops)) == 1, thread_of(ops)
    assert not [t for t in ops.told(url) if "Refused" in t], ops.told(url)
    assert [e.outcome for e in AuditLog(mesh.redis).last(NS, 20)].count("pause") == 1


def test_a_rejected_approval_stops_the_workflow_with_nothing_more_changed(
        ops: ChatOps, mesh: Mesh) -> None:
    ops.command(f"migrate {NS} phase=5")
    ops.run()
    drive(ops, lambda w: "waiting for 1 approval" in w.note, approve=False)
    before = snapshot(mesh)
    ops.react(A1, ops.approval().ts, emoji="x")
    ops.run()
    stopped = drive(ops, lambda w: not w.status.active, approve=False)
    assert stopped.status is Status.STOPPED and "was rejected" in stopped.note, stopped.note
    assert stopped.cursor == 0 and snapshot(mesh) == before


def test_a_change_freeze_holds_the_workflow_until_it_is_lifted(ops: ChatOps,
                                                              mesh: Mesh) -> None:
    ops.command(f"migrate {NS} phase=2")
    ops.run()
    locks = Locks(mesh.redis)
    assert locks.set_freeze(Freeze(request_id="freeze-1", user="U0OPERATOR2",
                                   since=time.time())) is None
    held = drive(ops, lambda w: "changes are frozen" in w.note)
    assert held.cursor == 0 and held.status is Status.RUNNING
    assert all(template_annotations(mesh, f"{s}-v1") == {} for s in TIERS["pilot"])
    locks.lift_freeze(by="an operator in a test")
    assert drive(ops, lambda w: not w.status.active).status is Status.DONE


def test_during_a_freeze_a_migration_may_be_paused_or_aborted_but_not_resumed(
        ops: ChatOps, mesh: Mesh) -> None:
    ops.command(f"migrate {NS} phase=2")
    ops.run()
    locks = Locks(mesh.redis)
    assert locks.set_freeze(Freeze(request_id="freeze-1", user="U0OPERATOR2",
                                   since=time.time())) is None
    ops.command(f"migrate {NS} pause")
    ops.run()
    paused = workflow(mesh)
    assert paused is not None and paused.status is Status.PAUSED
    _, url = ops.command(f"migrate {NS} resume")
    ops.run()
    assert any("frozen" in t for t in ops.told(url))
    still = workflow(mesh)
    assert still is not None and still.status is Status.PAUSED
    ops.command(f"migrate {NS} abort")
    ops.run()
    stopped = drive(ops, lambda w: not w.status.active)
    assert stopped.status is not Status.DONE
    assert all(template_annotations(mesh, f"{s}-v1") == {} for s in TIERS["pilot"])


def test_a_service_the_migration_is_moving_takes_no_other_change(ops: ChatOps,
                                                                 mesh: Mesh) -> None:
    ops.command(f"migrate {NS} phase=2")
    ops.run()
    started = workflow(mesh)
    assert started is not None and started.step is not None and started.step.service
    moving = started.step.service
    before = snapshot(mesh)
    _, url = ops.command(f"canary {moving} 10")
    ops.run()
    assert any(f"`{moving}` is being moved onto the mesh by the migration of `{NS}`" in t
               for t in ops.told(url))
    assert snapshot(mesh) == before
    drive(ops, lambda w: not w.status.active)
    _, url = ops.command(f"canary {moving} 10")
    ops.run()
    assert not any("Refused" in t for t in ops.told(url))
    assert mesh.weights(moving) == {"stable": 90, "canary": 10}


def test_a_critical_service_with_a_rollout_not_ended_is_refused(ops: ChatOps,
                                                                mesh: Mesh) -> None:
    """A rollout still open on a critical service (here waiting for its start's approval, no
    weight moved yet) is refused before anything is written: the blue-green would hand green
    to the analysis over it."""
    service = sorted(TIERS["critical"])[0]
    waiting = machine.start(
        rollout_id="someone-elses", service=service, namespace=NS, steps=(10,), fixed=True,
        interval_s=30, failure_threshold=3, no_data_policy="hold", deadline_s=600,
        requested_by=OPERATOR, channel=CHANNEL, now=time.time(),
    ).model_copy(update={"phase": Phase.AWAITING_APPROVAL, "weight": 0})
    RolloutStore(mesh.redis).put(waiting)
    before = snapshot(mesh)
    ack, url = ops.command(f"migrate {NS} phase=4")
    ops.run()
    told = " ".join([ack, *ops.told(url)])
    assert f"`{service}` has a rollout awaiting approval: promote or roll it back" in told, told
    assert snapshot(mesh) == before
    assert workflow(mesh) is None
    assert RolloutStore(mesh.redis).get(service) == waiting


def test_a_report_slack_refused_mid_phase_is_said_once_and_the_phase_goes_on(
        ops: ChatOps, mesh: Mesh) -> None:
    """Slack answers 500 to the workflow's first report into its thread (said after the step's
    change was made): the report is owed and said once, and no step's report goes missing."""
    ops.command(f"migrate {NS} phase=2")
    ops.run()
    started = workflow(mesh)
    assert started is not None and started.thread_ts
    mesh.slack.fail_in_thread(CHANNEL, started.thread_ts, times=1)
    done = drive(ops, lambda w: not w.status.active)
    assert done.status is Status.DONE, done
    deliver_owed(context.current())  # the ticker's duty: what Slack is owed
    texts = thread_of(ops)
    said = [t for t in texts if not t.startswith("*Migration")]
    assert len(said) == len(set(said)), said  # nothing twice
    migrated = [t.split("`")[1] for t in texts if "migrated (phase 2)" in t]
    assert sorted(migrated) == sorted(TIERS["pilot"]), texts
    injected = [t.split("`")[1] for t in texts if "sidecar injection set on" in t]
    assert sorted(injected) == sorted(TIERS["pilot"]), texts
