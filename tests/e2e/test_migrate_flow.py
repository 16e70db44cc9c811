"""`/mesh migrate` end to end: a real `meshbot worker` (its ticker moves the workflow on), the
real kube-apiserver, a real Prometheus scraping the traffic generator, which splits its traffic
by the live VirtualService weights (so the blue-green's 90/10 is what Prometheus sees), and the
Slack stand-in. The test plays the Deployment controller and the approvers.

Watch windows are 5 s (policy ``migrate.*``; five scrapes, the least a watch takes), the
analysis that judges a green copy checks every 2 s; the scrape interval is 1 s."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.adapters.audit import AuditLog
from jobs.adapters.migration_store import MigrationStore
from jobs.adapters.rollout_store import RolloutStore
from jobs.domain.approval_rules import Verdict
from jobs.domain.migration import Status, Workflow
from jobs.domain.rollout import Phase
from jobs.domain.routes import Subsets
from playground.deployment_controller import RolloutController
from playground.sample_mesh import TIERS
from tests.fixtures.live import Live, eventually
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh, MeshBase
from tests.fixtures.slack import fail_post_saying
from tests.integration.chatops import APPROVERS, ChatOps
from tests.integration.test_istio_models import assert_valid_istio
from tests.integration.test_migrate import write_migrate_policy
from tests.integration.test_readiness import seed_ready_control_plane

NS = "production"
NET = ("networking.istio.io", "v1beta1")
INJECT = "sidecar.istio.io/inject"


@pytest.fixture
def policy_path(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    windows = getattr(request, "param", {})
    path = write_migrate_policy(tmp_path, **{"watch": "5s", "critical_watch": "5s", **windows})
    data = yaml.safe_load(path.read_text())
    data["defaults"]["analysis"].update({"interval": "2s", "failure_threshold": 2})
    data["defaults"]["slo"].update({"success_rate": 99.0})
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def ops(live: Live) -> Iterator[ChatOps]:
    seed_ready_control_plane(live.mesh.cluster, ("zone-a", "zone-b", "zone-c"))
    with RolloutController(live.mesh.cluster) as controller:
        yield ChatOps.start(live.mesh)
    assert not controller.errors, controller.errors


def workflow(mesh: MeshBase) -> Workflow | None:
    return MigrationStore(mesh.redis).get(NS)


class Approvers:
    """Approve every approval request the workflow posts (two approvers: the critical tier's
    promote count)."""

    def __init__(self, ops: ChatOps) -> None:
        self.ops = ops
        self.seen: set[str] = set()

    def __call__(self) -> None:
        for message in self.ops.mesh.slack.roots(CHANNEL):
            if "Approval needed" in message.text and message.ts not in self.seen:
                # The message is posted a moment before its request is stored: until then a
                # reaction is on no request, and is given again on the next look.
                verdicts = [self.ops.react(a, message.ts) for a in APPROVERS[:2]]
                if Verdict.NOT_A_REQUEST.value not in verdicts:
                    self.seen.add(message.ts)


def until(ops: ChatOps, wanted: Any, timeout: float, what: str,
          approve: bool = True) -> Workflow:
    approvers = Approvers(ops)

    def probe() -> Workflow | None:
        if approve:
            approvers()
        current = workflow(ops.mesh)
        return current if current is not None and wanted(current) else None

    try:
        return eventually(probe, timeout, what, interval=0.2)
    except AssertionError as exc:
        now = workflow(ops.mesh)
        seen = (now.status, now.step, now.note, now.last) if now else None
        raise AssertionError(f"{exc}; the workflow: {seen}") from None


def start(ops: ChatOps, text: str) -> None:
    ack, _ = ops.command(text)
    assert "migrate" in ack, ack


def deployment(mesh: Mesh, name: str) -> dict[str, Any]:
    return mesh.cluster.get("apps", "v1", "deployments", NS, name)


def injected(mesh: Mesh, name: str) -> bool:
    meta = deployment(mesh, name)["spec"]["template"]["metadata"]
    return (meta.get("annotations") or {}).get(INJECT) == "true"


def routes(mesh: Mesh, service: str) -> tuple[Any, Any]:
    vs = mesh.cluster.get(*NET, "virtualservices", NS, service)
    dr = mesh.cluster.get(*NET, "destinationrules", NS, service)
    return vs["spec"], dr["spec"]


def thread(ops: ChatOps) -> list[str]:
    roots = [m for m in ops.mesh.slack.roots(CHANNEL) if "*Migration" in m.text]
    return ops.thread(roots[-1].ts)


@pytest.mark.timeout(300)  # six watch windows and twelve rollouts, one after another
def test_a_whole_migration_of_three_tiers(ops: ChatOps, live: Live) -> None:
    mesh = live.mesh
    start(ops, f"migrate {NS}")
    done = until(ops, lambda w: not w.status.active, 240, "the migration ended")
    assert done.status is Status.DONE, (done.status, done.note)
    for service in TIERS["pilot"] + TIERS["core"]:
        assert injected(mesh, f"{service}-v1") and injected(mesh, f"{service}-v2")
    for service in TIERS["critical"]:
        with pytest.raises(KeyError):
            deployment(mesh, f"{service}-v1")  # blue, removed after the cut-over
        green = deployment(mesh, f"{service}-v1-green")
        assert injected(mesh, f"{service}-v1-green") and injected(mesh, f"{service}-v2")
        assert green["spec"]["template"]["metadata"]["labels"]["version"] == "green"
        _, dr = routes(mesh, service)
        assert mesh.weights(service) == {"stable": 100, "canary": 0}  # routes as before
        assert {s["name"]: s["labels"] for s in dr["subsets"]} == {
            "stable": {"version": "green"}, "canary": {"version": "v2"}}
        assert dr["trafficPolicy"]["tls"]["mode"] == "ISTIO_MUTUAL"
        judged = RolloutStore(mesh.redis).get(service)  # the analysis passed green, then it
        assert judged is not None and judged.phase is Phase.PROMOTED  # was cut over
        assert judged.passed_checks >= 1
    peer = mesh.cluster.get("security.istio.io", "v1beta1", "peerauthentications", NS,
                            "default")
    assert peer["spec"]["mtls"]["mode"] == "STRICT"
    mutual = mesh.cluster.get(*NET, "destinationrules", NS, "default")
    assert mutual["spec"]["trafficPolicy"]["tls"]["mode"] == "ISTIO_MUTUAL"
    assert_valid_istio(mutual)
    assert mesh.cluster.get("telemetry.istio.io", "v1", "telemetries", NS,
                            "production-telemetry")["spec"]["tracing"] == [
        {"providers": [{"name": "jaeger"}]}]
    texts = thread(ops)
    assert any("complete in" in t for t in texts)
    assert sum("migrated (phase 3)" in t and "% errors at" in t for t in texts) == 3
    assert sum("green held for" in t and "under the analysis" in t for t in texts) == 3
    eventually(lambda: "Migration of `production`: done" in mesh.slack.message(
        CHANNEL, done.status_ts).text, 10, "the status message says done")


def test_a_core_service_without_traffic_is_not_passed(ops: ChatOps, live: Live) -> None:
    """No request in the watch window is no evidence: the workflow holds on that service (the
    packaged policy's analysis.no_data is hold) and says why, instead of calling it migrated."""
    first = sorted(TIERS["core"])[0]
    live.traffic.control({"service": first, "namespace": NS, "rps": 0})
    start(ops, f"migrate {NS} phase=3")
    held = until(ops, lambda w: w.step is not None and w.step.service == first
                 and "without seeing any traffic" in w.note, 60, "the watch holding")
    assert held.status is Status.RUNNING and held.step is not None
    assert held.step.kind == "watch"
    assert not any(f"`{first}` migrated" in t for t in thread(ops))
    live.traffic.control({"service": first, "namespace": NS, "rps": 20})
    until(ops, lambda w: w.step is None or w.step.service != first, 60,
          "the watch passing once requests show")
    assert any("migrated (phase 3)" in t and first in t for t in thread(ops))


def test_core_errors_undo_the_injection_and_stop(ops: ChatOps, live: Live) -> None:
    mesh, first = live.mesh, sorted(TIERS["core"])[0]
    live.traffic.set_profile(first, version="v1", namespace=NS, error_rate=0.2)
    start(ops, f"migrate {NS} phase=3")
    stopped = until(ops, lambda w: not w.status.active, 120, "the migration stopped")
    assert stopped.status is Status.STOPPED and f"`{first}` undone" in stopped.note
    assert not injected(mesh, f"{first}-v1") and not injected(mesh, f"{first}-v2")
    for later in sorted(TIERS["core"])[1:]:
        assert not injected(mesh, f"{later}-v1")  # the workflow stopped before them
    undone = next(t for t in thread(ops) if "undone" in t)
    assert "% errors at" in undone and "threshold 1 %" in undone
    eventually(lambda: "Last numbers" in mesh.slack.message(CHANNEL, stopped.status_ts).text,
               10, "the status message shows the numbers")


@pytest.mark.parametrize(("profile", "shown"), [
    # What the analysis judged green on: its comparison with blue, a check's or a look's.
    ({"error_rate": 0.5}, "errors vs stable (5xx): canary 50.0%"),
    ({"latency_ms": 400.0}, "latency vs stable (slower than"),  # no errors: slower than blue
])
def test_a_breach_of_green_goes_back_to_blue(ops: ChatOps, live: Live, profile: dict[str, float],
                                             shown: str) -> None:
    mesh = live.mesh
    first = sorted(TIERS["critical"])[0]
    before = routes(mesh, first)
    blue = deployment(mesh, f"{first}-v1")
    live.traffic.set_profile(first, version="green", namespace=NS,
                             error_rate=profile.get("error_rate"),
                             latency_ms=profile.get("latency_ms"))
    start(ops, f"migrate {NS} phase=4")
    stopped = until(ops, lambda w: not w.status.active, 120, "the migration stopped")
    assert stopped.status is Status.STOPPED and "back to blue" in stopped.note
    assert routes(mesh, first) == before
    with pytest.raises(KeyError):
        deployment(mesh, f"{first}-v1-green")
    after = deployment(mesh, f"{first}-v1")
    assert after["spec"] == blue["spec"] and after["metadata"]["uid"] == blue["metadata"]["uid"]
    told = next(t for t in thread(ops) if "back to blue at once" in t)
    assert shown in told, told
    # It was meshbot's analysis that judged green and moved the traffic back (audited as its
    # own change), before the workflow put the rest back.
    entries = AuditLog(mesh.redis).last(first, 30)
    [rollback] = [e for e in entries if e.actor == "meshbot" and e.action == "rollback"]
    assert rollback.after == "stable 100 / canary 0" and "canary 10" in (rollback.before or "")
    assert any("Automatic rollback" in t for t in thread(ops))


@pytest.mark.parametrize("policy_path", [{"critical_watch": "2m"}], indirect=True)
def test_the_split_said_once_though_slack_refused_it(ops: ChatOps, live: Live,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Slack answers 500 to the report of green's 10 %, said after the split and its analysis
    were in place: the step is not run again (which would find them there and say nothing);
    the report is owed, and the ticker says it in the thread, once."""
    mesh = live.mesh
    first = sorted(TIERS["critical"])[0]
    fail_post_saying(mesh.slack, monkeypatch, f"`{first}`: header `canary: true` → green")
    start(ops, f"migrate {NS} phase=4")
    until(ops, lambda w: w.step is not None and w.step.kind == "watch"
          and "watching" in w.note, 90, "the green copy under watch")
    assert mesh.weights(first) == {"blue": 90, "green": 10}

    def said() -> list[str]:
        return [t for t in thread(ops) if t.startswith(f"`{first}`: header `canary: true`")]

    texts = eventually(said, 30, "the split's report delivered to the thread")
    assert len(texts) == 1 and "under meshbot's analysis for 2m" in texts[0], texts
    splits = [e for e in AuditLog(mesh.redis).last(first, 30) if "blue 90 / green 10" in e.detail]
    assert len(splits) == 1, splits


@pytest.mark.parametrize("policy_path", [{"critical_watch": "2m"}], indirect=True)
def test_abort_mid_blue_green_leaves_nothing_half_done(ops: ChatOps, live: Live) -> None:
    mesh = live.mesh
    first = sorted(TIERS["critical"])[0]
    before = routes(mesh, first)
    blue = deployment(mesh, f"{first}-v1")
    start(ops, f"migrate {NS} phase=4")
    until(ops, lambda w: w.step is not None and w.step.kind == "watch"
          and "watching" in w.note, 90, "the green copy under watch")
    assert mesh.weights(first) == {"blue": 90, "green": 10}
    judged = RolloutStore(mesh.redis).get(first)  # green's 10 % is the analysis's to judge
    assert judged is not None and judged.phase.watched and judged.subsets == Subsets("blue",
                                                                                     "green")
    ops.command(f"migrate {NS} abort")
    aborted = until(ops, lambda w: not w.status.active, 60, "the migration aborted")
    assert aborted.status is Status.ABORTED, aborted
    ended = RolloutStore(mesh.redis).get(first)
    assert ended is not None and ended.phase.terminal  # no tick judges (or writes) after it
    assert routes(mesh, first) == before
    with pytest.raises(KeyError):
        deployment(mesh, f"{first}-v1-green")
    assert deployment(mesh, f"{first}-v1")["spec"] == blue["spec"]
    names = [d["metadata"]["name"] for d in mesh.cluster.list("apps", "v1", "deployments", NS)]
    assert not [n for n in names if n.endswith("-green")], names
    assert all(f"{s}-v1" in names for s in TIERS["critical"])  # no blue ever removed


@pytest.mark.parametrize("policy_path", [{"critical_watch": "2m"}], indirect=True)
def test_a_rollback_command_during_the_90_10_goes_back_to_blue(ops: ChatOps,
                                                              live: Live) -> None:
    """`/mesh rollback` wins over the migration too: all traffic back on blue at once (its
    rollout is the analysis's), then the workflow puts the rest back and stops."""
    mesh = live.mesh
    first = sorted(TIERS["critical"])[0]
    before = routes(mesh, first)
    start(ops, f"migrate {NS} phase=4")
    until(ops, lambda w: w.step is not None and w.step.kind == "watch"
          and "watching" in w.note, 90, "the green copy under watch")
    ops.command(f"rollback {first}")
    stopped = until(ops, lambda w: not w.status.active, 60, "the migration stopped")
    assert stopped.status is Status.STOPPED and "rolled back by a command" in stopped.note
    assert routes(mesh, first) == before
    with pytest.raises(KeyError):
        deployment(mesh, f"{first}-v1-green")
    entries = AuditLog(mesh.redis).last(first, 30)
    assert any(e.action == "rollback" and e.actor == OPERATOR for e in entries), entries


@pytest.mark.timeout(200)
def test_a_worker_killed_mid_phase_is_resumed(ops: ChatOps, live: Live) -> None:
    mesh = live.mesh
    start(ops, f"migrate {NS} phase=3")
    watching = until(ops, lambda w: w.step is not None and w.step.kind == "watch",
                     60, "the first core service under watch")
    live.worker.kill()  # SIGKILL: no lease released, nothing flushed
    killed_at = watching.cursor
    live.worker = live.start_worker("second")
    done = until(ops, lambda w: not w.status.active, 120, "the migration ended")
    assert done.status is Status.DONE, (done.status, done.note)
    assert done.cursor > killed_at
    for service in TIERS["core"]:
        assert injected(mesh, f"{service}-v1") and injected(mesh, f"{service}-v2")
    assert sum("migrated (phase 3)" in t for t in thread(ops)) == 3
    assert time.time() - done.started_at < 120


def test_abort_past_the_cut_over_finishes_the_service(live: Live) -> None:
    """Once green has all the traffic, blue may be gone: abort finishes that service (never
    half) and stops before the next one."""
    mesh = live.mesh
    first, *later = sorted(TIERS["critical"])
    idle = f"{first}-v2"  # no subset routes to it: injected in place after the cut-over
    held = {"on": True}

    def hold(deployment: dict[str, Any]) -> bool:
        return held["on"] and deployment["metadata"]["name"] == idle

    seed_ready_control_plane(mesh.cluster, ("zone-a", "zone-b", "zone-c"))
    with RolloutController(mesh.cluster, hold=hold) as controller:
        ops = ChatOps.start(mesh)
        start(ops, f"migrate {NS} phase=4")
        until(ops, lambda w: w.step is not None and w.step.kind == "idle_rollout"
              and w.step.service == first, 90, f"{first}'s idle Deployment rolling")
        ops.command(f"migrate {NS} abort")
        until(ops, lambda w: w.status is Status.ABORTING, 20, "the abort taken")
        held["on"] = False
        aborted = until(ops, lambda w: not w.status.active, 60, "the migration aborted")
    assert not controller.errors, controller.errors
    assert aborted.status is Status.ABORTED and "finished (past its cut-over)" in aborted.note
    with pytest.raises(KeyError):
        deployment(mesh, f"{first}-v1")
    assert injected(mesh, f"{first}-v1-green") and injected(mesh, idle)
    assert mesh.weights(first) == {"stable": 100, "canary": 0}
    for service in later:
        assert not injected(mesh, f"{service}-v1")
        with pytest.raises(KeyError):
            deployment(mesh, f"{service}-v1-green")


@pytest.mark.parametrize("policy_path", [{"watch": "1m"}], indirect=True)
def test_a_paused_watch_still_undoes_errors(ops: ChatOps, live: Live) -> None:
    mesh, first = live.mesh, sorted(TIERS["core"])[0]
    start(ops, f"migrate {NS} phase=3")
    until(ops, lambda w: w.step is not None and w.step.kind == "watch"
          and "watching" in w.note, 60, f"{first} under watch")
    ops.command(f"migrate {NS} pause")
    paused = until(ops, lambda w: w.status is Status.PAUSED and w.note == "paused", 20,
                   "the workflow paused")
    assert injected(mesh, f"{first}-v1")
    live.traffic.set_profile(first, version="v1", namespace=NS, error_rate=0.3)
    stopped = until(ops, lambda w: not w.status.active, 60, "the errors put back")
    assert stopped.status is Status.STOPPED and f"`{first}` undone" in stopped.note
    assert stopped.cursor == paused.cursor  # the watch never ended while paused
    assert not injected(mesh, f"{first}-v1") and not injected(mesh, f"{first}-v2")
