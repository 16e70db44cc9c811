"""A rollback wins even over a change whose job never made its after-write check: the change's
VirtualService write was on the wire when the rollback ran (the rollback found the mesh still
at stable 100 and wrote nothing), the write landed after it, and the job that sent it ended
without looking again — its worker SIGKILLed, or (here) its write answered nothing in time, so
the job is run again — and that second run is refused as overtaken at its start, writing
nothing. The mesh must still end as the rollback set it: stable 100."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from jobs.adapters.audit import AuditLog
from jobs.adapters.rollout_store import RolloutStore
from jobs.domain.rollout import Phase
from jobs.runtime import context
from jobs.runtime.reconcile import GRACE_S, reconcile
from meshbot.commands import Request, Verb
from tests.fixtures.meshbot import CHANNEL, EmulatedMesh
from tests.integration.test_rollback_wins import _taken_by_another_worker
from tests.integration.test_worker_jobs import SERVICE, release_retries, submit, told

DEADLINE_S = 30.0


def _wait_for(condition: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        assert time.monotonic() < deadline, f"never: {condition}"
        time.sleep(0.05)


def test_a_landed_write_whose_job_never_checked_it_is_put_back(
        emulated_mesh: EmulatedMesh) -> None:
    mesh = emulated_mesh
    held = mesh.cluster.hold(method="PATCH", plural="virtualservices", timeout=60)
    rollbacks: list[Request] = []

    def rollback_while_the_write_is_held() -> None:
        assert held.reached.wait(DEADLINE_S), "the canary's job never wrote its weight"
        rollback = submit(mesh, Verb.ROLLBACK)  # acked after the canary, while it writes
        rollbacks.append(rollback)
        _taken_by_another_worker(mesh, rollback).join(DEADLINE_S)  # run to its end

    other = threading.Thread(target=rollback_while_the_write_is_held, name="rollback")
    other.start()
    canary = submit(mesh, Verb.CANARY, 10)
    # The canary's job: its write is held past the client's timeout; the job is retried.
    mesh.run_jobs()
    other.join(DEADLINE_S)
    assert not other.is_alive() and rollbacks
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}  # the rollback found it so

    held.release()  # the canary's write lands now, after the rollback, and nobody checks it
    _wait_for("the canary's write landed",
              lambda: mesh.weights(SERVICE) == {"stable": 90, "canary": 10})
    while release_retries(mesh.redis):  # the canary's job again: overtaken at its start
        mesh.run_jobs()
    reconcile(context.current(), now=time.time() + GRACE_S + 1)  # the ticker's next look

    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    store = RolloutStore(mesh.redis)
    rollout = store.get(SERVICE)
    assert rollout is not None and rollout.id == canary.id
    assert rollout.phase is Phase.ROLLED_BACK
    assert store.unapplied_since(float("inf")) == []  # settled, nothing left over
    outcomes = [(e.request_id, e.action, e.outcome)
                for e in AuditLog(mesh.redis).last(SERVICE, 30)]
    assert (canary.id, "canary", "overtaken") in outcomes
    assert (rollbacks[0].id, "rollback", "done") in outcomes
    assert any(action == "reconcile" and outcome == "done" for _, action, outcome in outcomes)
    assert any("a rollback of `payment-service` was accepted after it" in t
               for t in told(mesh, canary))
    canary_root = next(m for m in mesh.slack.roots(CHANNEL) if "canary" in m.text.lower())
    said = [m.text for m in mesh.slack.thread(CHANNEL, canary_root.ts)]
    assert "stable 100 / canary 0" in said[-1].replace("*", ""), said
