"""Approved work blocked by another's lock waits with its approvals kept, and a real worker's
ticker runs it once the lock is gone: a signed slash command to `meshbot serve`, two approvers
over signed Events API callbacks, a `meshbot worker` process (its ticker and its jobs), Redis,
the kube-apiserver and the Slack stand-in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.adapters.approval_store import ApprovalStore
from jobs.adapters.locks import Lock, Locks
from jobs.domain.approval_rules import ApprovalState
from playground.processes import MeshbotProcess, ServeProcess
from playground.redis_server import free_port
from playground.slack_client import reaction_event, send_event, send_slash_command
from tests.fixtures.live import eventually
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh

A1, A2 = "U0APPROVER1", "U0APPROVER2"
SERVICE = "payment-service"
HOLDER = "U0OPERATOR2"


@pytest.fixture
def worker(mesh: Mesh, server: ServeProcess, tmp_path: Path) -> Iterator[MeshbotProcess]:
    env = {**mesh.env, "MESHBOT_TICK_PERIOD": "0.5",
           "PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}"}  # nothing to analyse here
    process = MeshbotProcess(["worker"], env, tmp_path / "worker.log").start()
    try:
        yield process
    finally:
        process.stop()
        print(process.log()[-4000:])  # shown by pytest when the test failed


def react(mesh: Mesh, server: ServeProcess, user: str, ts: str, event_id: str) -> None:
    event = reaction_event("reaction_added", user=user, reaction="white_check_mark",
                           channel=CHANNEL, ts=ts)
    assert send_event(f"{server.url}/slack/events", mesh.signing_secret, event,
                      event_id).status == 200


def state(mesh: Mesh, ts: str) -> ApprovalState | None:
    pending = ApprovalStore(mesh.redis).get(CHANNEL, ts)
    return pending.state if pending else None


def test_approved_work_waits_for_a_lock_and_the_ticker_runs_it(
        mesh: Mesh, server: ServeProcess, worker: MeshbotProcess) -> None:
    url = mesh.slack.new_response_url(channel=CHANNEL, user=OPERATOR)
    reply = send_slash_command(f"{server.url}/slack/events", mesh.signing_secret,
                               text=f"canary {SERVICE} 30", user_id=OPERATOR,
                               channel_id=CHANNEL, response_url=url)
    assert reply.status == 200 and "pending approval" in reply.body
    request = mesh.slack.wait_for_message(CHANNEL, lambda m: "Approval needed" in m.text)
    locks = Locks(mesh.redis)
    assert locks.acquire(Lock(service=SERVICE, request_id="other-worker", user=HOLDER,
                              what=f"/mesh rollout {SERVICE}", since=time.time())) is None

    react(mesh, server, A1, request.ts, "Ev0FIRST")
    react(mesh, server, A2, request.ts, "Ev0SECOND")
    eventually(lambda: state(mesh, request.ts) is ApprovalState.WAITING, 30,
               "the approved work waits for the lock")
    text = eventually(lambda: next((t for t in [mesh.slack.message(CHANNEL, request.ts).text]
                                    if "waiting:" in t), None), 10, "the request says so")
    assert f"waiting: {SERVICE} is busy (<@{HOLDER}>" in text and "runs when it is free" in text
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}

    locks.release(SERVICE, "other-worker")
    eventually(lambda: mesh.weights(SERVICE) == {"stable": 70, "canary": 30}, 30,
               "the ticker ran the approved work once the lock was gone")
    eventually(lambda: "; done." in mesh.slack.message(CHANNEL, request.ts).text, 30,
               "the request says it was done")
    assert f"Approved by <@{A1}> and <@{A2}>; done." in mesh.slack.message(CHANNEL,
                                                                            request.ts).text
