"""Redis restarted, with its AOF, in the middle of a rollout: what an operator checks afterwards.

A rollout is progressing under analysis (a real ``meshbot worker`` with its ticker, a real
Prometheus scraping the mesh traffic generator) and a second one waits for its approvals with
one vote counted. Redis is stopped (SIGTERM: it writes its AOF and exits, as a pod restart does)
and started again on the same port from the same directory. Then: the worker and its ticker carry
on by themselves; each rollout is where it was (phase, weight, history) and its analysis goes on
to the end; the vote counted before the restart still counts; no audit entry is gone; nothing in
the channel says meshbot lost its state; ``/readyz`` of the server and of the worker is 200 again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.adapters.approval_store import ApprovalStore
from jobs.adapters.audit import AuditLog
from jobs.domain.rollout import Phase
from playground.processes import MeshbotProcess, ServeProcess
from playground.redis_server import RedisServer, free_port
from playground.slack_client import reaction_event, send_event
from tests.e2e.test_analysis import in_phase, slash, wait_thread
from tests.fixtures.live import Live, eventually
from tests.fixtures.meshbot import CHANNEL
from tests.fixtures.probes import readyz

LOST = "lost its state"  # rendering.admin.state_vanished: what a Redis that came back empty says


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """This test's own Redis, with AOF, so that it can be restarted (the suite's has none)."""
    with RedisServer(tmp_path / "redis-aof", appendonly=True) as server:
        yield server


@pytest.fixture
def policy_path(analysis_policy: Path) -> Path:
    return analysis_policy


def said_about_redis(worker: MeshbotProcess, logger: str) -> bool:
    """Whether ``logger`` in the worker's log (JSON lines) said something about Redis."""
    for line in worker.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("logger") == logger and "Redis" in str(record.get("msg")):
            return True
    return False


def approve(live: Live, server: ServeProcess, user: str, ts: str) -> None:
    event = reaction_event("reaction_added", user=user, reaction="white_check_mark",
                           channel=CHANNEL, ts=ts)
    assert send_event(f"{server.url}/slack/events", live.mesh.signing_secret, event,
                      f"Ev0{user}").status == 200


def test_a_redis_restart_with_aof_mid_rollout_loses_nothing_and_the_rollouts_go_on(
        live: Live, server: ServeProcess, redis_server: RedisServer) -> None:
    mesh = live.mesh
    # The worker, with its probes (the fixture's has none), as the chart runs it.
    live.worker.stop()
    probe_port = free_port()
    live.worker = MeshbotProcess(["worker", "--metrics-port", str(probe_port)], mesh.env,
                                 live.tmp / "worker-probed.log").start()
    worker_url = f"http://127.0.0.1:{probe_port}"
    eventually(lambda: readyz(worker_url)[0] == 200, 20, "the worker's /readyz answers 200")

    # A critical service's rollout waits for two approvals at the step above canary_above;
    # one approver has voted.
    slash(mesh, server, "rollout payment-service steps=10,50 interval=2s")
    eventually(lambda: in_phase(live, "payment-service", Phase.AWAITING_APPROVAL), 30,
               "the step to 50% waits for approvers")
    request = mesh.slack.wait_for_message(CHANNEL, lambda m: "Approval needed" in m.text,
                                          timeout=10)
    approvals = ApprovalStore(mesh.redis)
    eventually(lambda: approvals.get(CHANNEL, request.ts), 10, "the request is registered")
    approve(live, server, "U0APPROVER1", request.ts)
    eventually(lambda: (p := approvals.get(CHANNEL, request.ts)) and p.approvals, 15,
               "the first vote is counted")

    # A pilot service's rollout under analysis, its first step just applied.
    slash(mesh, server, "rollout logging-service steps=10,50 interval=4s")
    eventually(lambda: (r := live.rollout("logging-service")) is not None and r.weight == 10
               and r.phase == Phase.PROGRESSING, 20, "the first step is applied")
    before = live.rollout("logging-service")
    vote = approvals.get(CHANNEL, request.ts)
    audit = [e.model_dump() for e in AuditLog(mesh.redis).last(None, 200)]
    assert before is not None and vote is not None and audit

    redis_server.stop()  # SIGTERM: Redis writes its AOF and exits
    eventually(lambda: readyz(server.url)[0] == 503 and readyz(worker_url)[0] == 503, 10,
               "both /readyz say Redis is down")
    # Down long enough that the worker's ticker and RQ's own loop have each lost it.
    eventually(lambda: said_about_redis(live.worker, "meshbot.ticker")
               and said_about_redis(live.worker, "rq.worker"), 15,
               "the ticker and RQ's loop in the worker find Redis gone")
    redis_server.start()  # same port, same directory: it loads its AOF
    mesh.redis.connection_pool.disconnect()  # the test's own client: its connection is gone

    after = live.rollout("logging-service")
    assert after is not None
    assert (after.phase, after.weight, after.step_index) == (
        before.phase, before.weight, before.step_index)
    assert after.history[:len(before.history)] == before.history
    kept = approvals.get(CHANNEL, request.ts)
    assert kept is not None and kept.approvals == vote.approvals == ("U0APPROVER1",)
    now = [e.model_dump() for e in AuditLog(mesh.redis).last(None, 400)]
    assert [e for e in audit if e not in now] == []  # no entry from before is gone

    for url in (server.url, worker_url):
        def ready(u: str = url) -> dict[str, str] | None:
            status, report = readyz(u)
            return report if status == 200 else None
        report = eventually(ready, 20, f"{url}/readyz is 200 again")
        assert "state" not in report and "warning" not in report, report

    # The worker and its ticker carry on: the analysis goes on to the last step ...
    eventually(lambda: in_phase(live, "logging-service", Phase.READY_TO_PROMOTE), 40,
               "the rollout's analysis resumes and passes both steps")
    assert mesh.weights("logging-service") == {"stable": 50, "canary": 50}
    wait_thread(mesh, "logging-service", "Step 2/2: canary now 50%")
    # ... and the vote from before the restart counts with the second one.
    approve(live, server, "U0APPROVER2", request.ts)
    eventually(lambda: mesh.weights("payment-service") == {"stable": 50, "canary": 50}, 30,
               "two approvals, one from before the restart, take the step")

    said = "\n".join(m.text for m in mesh.slack.messages(CHANNEL))
    assert LOST not in said
    assert live.worker.process is not None and live.worker.process.poll() is None  # same process
    assert "Traceback" not in live.worker.log()
