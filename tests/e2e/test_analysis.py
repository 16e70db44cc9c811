"""SLO-gated rollouts against a real Prometheus: advance on healthy checks, roll back on broken
ones, hold without evidence, survive a worker's death."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.adapters.approval_store import ApprovalStore
from jobs.adapters.audit import AuditLog
from jobs.domain.rollout import Phase
from playground.processes import ServeProcess
from playground.slack_client import reaction_event, send_event, send_slash_command
from tests.fixtures.live import Live, eventually
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh


@pytest.fixture
def policy_path(analysis_policy: Path) -> Path:
    return analysis_policy


def slash(mesh: Mesh, server: ServeProcess, text: str) -> None:
    reply = send_slash_command(f"{server.url}/slack/events", mesh.signing_secret, text=text,
                               user_id=OPERATOR, channel_id=CHANNEL,
                               response_url=mesh.slack.new_response_url())
    assert reply.status == 200, reply.body


def thread_text(mesh: Mesh, service: str) -> str:
    roots = [m for m in mesh.slack.roots(CHANNEL) if service in m.text]
    return "\n".join(m.text for root in roots for m in mesh.slack.thread(CHANNEL, root.ts))


def wait_thread(mesh: Mesh, service: str, *needles: str) -> str:
    """The service's threads once they show every needle (replies land just after the state
    and weights change, which is what the tests wait on first)."""
    def probe() -> str | None:
        text = thread_text(mesh, service)
        return text if all(n in text for n in needles) else None
    return eventually(probe, 15, f"the thread of {service} shows {needles}")


def in_phase(live: Live, service: str, *phases: Phase) -> bool:
    rollout = live.rollout(service)
    return rollout is not None and rollout.phase in phases


def rolled_back(live: Live, service: str) -> bool:
    """The state says so and the VirtualService shows it (the weights are written second)."""
    return in_phase(live, service, Phase.ROLLED_BACK) and \
        live.mesh.weights(service) == {"stable": 100, "canary": 0}


def test_healthy_rollout_walks_every_step_then_promotes(live: Live,
                                                        server: ServeProcess) -> None:
    mesh = live.mesh
    slash(mesh, server, "rollout logging-service steps=10,50 interval=2s")
    eventually(lambda: in_phase(live, "logging-service", Phase.READY_TO_PROMOTE), 40,
               "the rollout passes both steps")
    assert mesh.weights("logging-service") == {"stable": 50, "canary": 50}
    wait_thread(mesh, "logging-service", "Step 2/2: canary now 50%", "ready",
                "success rate 100.0% ≥ 99%")

    slash(mesh, server, "promote logging-service")
    eventually(lambda: mesh.weights("logging-service") == {"stable": 0, "canary": 100}, 20,
               "promote sends all traffic to the canary subset")
    wait_thread(mesh, "logging-service", "Promoted")


def test_errors_on_the_canary_roll_back_with_the_numbers(live: Live,
                                                         server: ServeProcess) -> None:
    mesh = live.mesh
    live.traffic.set_profile("health-checker", subset="canary", error_rate=0.3)
    slash(mesh, server, "canary health-checker 50")
    eventually(lambda: rolled_back(live, "health-checker"), 40,
               "the comparison with stable (or failed checks) rolls the canary back")
    assert mesh.weights("health-checker") == {"stable": 100, "canary": 0}
    # 30 % errors against none on stable: the comparison is conclusive by the second check
    wait_thread(mesh, "health-checker", "Automatic rollback", "worse than stable on errors",
                "success rate", "< 99%", "errors vs stable (5xx): canary 30.0%")
    alert = mesh.slack.wait_for_message(CHANNEL, lambda m: "Alert" in m.text, timeout=10)
    assert "health-checker" in alert.text
    # The analysis's own change of the mesh is audited, like anyone's.
    entries = AuditLog(mesh.redis).last("health-checker", 20)
    [rollback] = [e for e in entries if e.actor == "meshbot" and e.action == "rollback"]
    assert rollback.after == "stable 100 / canary 0" and "canary 50" in (rollback.before or "")


def test_latency_on_the_canary_rolls_back(live: Live, server: ServeProcess) -> None:
    mesh = live.mesh
    live.traffic.set_profile("logging-service", subset="canary", latency_ms=400)
    slash(mesh, server, "rollout logging-service steps=20,50 interval=2s")
    eventually(lambda: rolled_back(live, "logging-service"), 40,
               "slow canary is rolled back")
    assert mesh.weights("logging-service") == {"stable": 100, "canary": 0}
    # Whichever sees it first says why: the comparison with stable (looked at every tick) or
    # the p99 guard (at the check).
    eventually(lambda: ("worse than stable on latency" in thread_text(mesh, "logging-service")
                        or "> 100 ms" in thread_text(mesh, "logging-service")), 15,
               "the thread says the canary was rolled back for its latency")


def test_too_little_traffic_holds_and_never_advances(live: Live, server: ServeProcess) -> None:
    mesh = live.mesh
    live.traffic.control({"service": "health-checker", "namespace": "production", "rps": 4})
    slash(mesh, server, "rollout health-checker steps=10,50 interval=2s")
    eventually(lambda: in_phase(live, "health-checker", Phase.HOLDING), 30,
               "a canary below min_request_rate holds")
    assert mesh.weights("health-checker") == {"stable": 90, "canary": 10}
    wait_thread(mesh, "health-checker", "Holding", "req/s minimum")


def test_no_data_rolls_back_after_the_deadline_when_policy_says_so(
        live: Live, server: ServeProcess) -> None:
    mesh = live.mesh
    live.traffic.control({"service": "metrics-collector", "namespace": "production", "rps": 4})
    slash(mesh, server, "canary metrics-collector 10")
    eventually(lambda: rolled_back(live, "metrics-collector"), 40,
               "no_data: rollback rolls back past the deadline")
    assert mesh.weights("metrics-collector") == {"stable": 100, "canary": 0}
    wait_thread(mesh, "metrics-collector", "no SLO evidence past the deadline")


def test_prometheus_down_holds_and_never_advances(live: Live, server: ServeProcess) -> None:
    mesh = live.mesh
    slash(mesh, server, "rollout logging-service steps=10,50 interval=2s")
    eventually(lambda: mesh.weights("logging-service") == {"stable": 90, "canary": 10}, 20,
               "the first step is applied")
    live.prometheus.stop()
    eventually(lambda: in_phase(live, "logging-service", Phase.HOLDING), 30,
               "Prometheus unreachable is no data: hold")
    assert mesh.weights("logging-service") == {"stable": 90, "canary": 10}
    wait_thread(mesh, "logging-service", "Prometheus unreachable")
    said = "\n".join(m.text for m in mesh.slack.messages(CHANNEL))
    assert "refused the connection" in said
    assert "HTTPConnectionPool" not in said and "Max retries" not in said


def test_a_killed_worker_is_replaced_and_the_rollout_resumes(live: Live,
                                                            server: ServeProcess) -> None:
    mesh = live.mesh
    slash(mesh, server, "rollout logging-service steps=10,20,50 interval=2s")
    eventually(lambda: mesh.weights("logging-service") == {"stable": 90, "canary": 10}, 20,
               "the first step is applied")
    live.worker.kill()
    live.worker = live.start_worker("worker-2")
    eventually(lambda: in_phase(live, "logging-service", Phase.READY_TO_PROMOTE), 60,
               "the new worker takes the rollout over from Redis and finishes it")
    assert mesh.weights("logging-service") == {"stable": 50, "canary": 50}


def test_a_step_above_canary_above_waits_for_approvers(live: Live, server: ServeProcess) -> None:
    mesh = live.mesh
    slash(mesh, server, "rollout payment-service steps=10,50 interval=2s")
    eventually(lambda: in_phase(live, "payment-service", Phase.AWAITING_APPROVAL), 30,
               "the step to 50% (above the critical tier's canary_above 25) waits")
    request = mesh.slack.wait_for_message(CHANNEL, lambda m: "Approval needed" in m.text,
                                          timeout=10)
    assert mesh.weights("payment-service") == {"stable": 90, "canary": 10}
    wait_thread(mesh, "payment-service", "needs approval")
    # The request is stored just after it is posted; people cannot react faster than that.
    eventually(lambda: ApprovalStore(mesh.redis).get(CHANNEL, request.ts), 10,
               "the approval request is registered")
    for user, event_id in (("U0APPROVER1", "Ev0STEP1"), ("U0APPROVER2", "Ev0STEP2")):
        event = reaction_event("reaction_added", user=user, reaction="white_check_mark",
                               channel=CHANNEL, ts=request.ts)
        assert send_event(f"{server.url}/slack/events", mesh.signing_secret, event,
                          event_id).status == 200
    eventually(lambda: mesh.weights("payment-service") == {"stable": 50, "canary": 50}, 30,
               "two approvals take the step")
    eventually(lambda: in_phase(live, "payment-service", Phase.READY_TO_PROMOTE), 30,
               "the approved step is analysed like any other")
