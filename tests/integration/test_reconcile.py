"""A writer that died between deciding weights and writing them is finished by the ticker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from jobs.adapters.rollout_store import RolloutStore
from jobs.domain.rollout import Event, apply, start
from jobs.runtime import context
from jobs.runtime.reconcile import GRACE_S, reconcile
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh

SERVICE = "user-service"


@pytest.fixture
def policy_path(analysis_policy: Path) -> Path:
    return analysis_policy  # it lets operators pause and resume


def canary_at(mesh: Mesh, percent: int) -> None:
    def split(vs: dict[str, Any]) -> None:
        for destination in vs["spec"]["http"][0]["route"]:
            subset = destination["destination"]["subset"]
            destination["weight"] = percent if subset == "canary" else 100 - percent
    mesh.cluster.change("networking.istio.io", "v1beta1", "virtualservices", "production",
                        SERVICE, split)


def rolled_back_but_not_written(mesh: Mesh, marked_at: float) -> None:
    """The state a rollback leaves when its worker is killed right after marking it."""
    ts = mesh.slack.post(CHANNEL, f"Canary `{SERVICE}`").ts
    rollout = start(rollout_id="r-1", service=SERVICE, namespace="production", steps=(30,),
                    fixed=True, interval_s=30, failure_threshold=3, no_data_policy="hold",
                    deadline_s=600, requested_by=OPERATOR, channel=CHANNEL, now=marked_at)
    store = RolloutStore(mesh.redis)
    store.mark_unapplied(SERVICE, marked_at)
    store.put(apply(rollout.model_copy(update={"thread_ts": ts}), Event.ROLLBACK, marked_at))
    canary_at(mesh, 30)


def test_a_rollback_whose_worker_died_is_written_by_the_ticker(mesh: Mesh) -> None:
    rolled_back_but_not_written(mesh, time.time() - GRACE_S - 1)

    assert reconcile(context.current()) == [SERVICE]

    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    root = mesh.slack.roots(CHANNEL)[0]
    assert "meshbot wrote them now: stable 100 / canary 0" in \
        mesh.slack.thread(CHANNEL, root.ts)[-1].text
    assert RolloutStore(mesh.redis).unapplied_since(time.time()) == []


def test_a_writer_still_within_its_grace_is_left_alone(mesh: Mesh) -> None:
    rolled_back_but_not_written(mesh, time.time())

    assert reconcile(context.current()) == []

    assert mesh.weights(SERVICE) == {"stable": 70, "canary": 30}
    assert RolloutStore(mesh.redis).unapplied_since(time.time() + 1) == [SERVICE]


def test_resume_without_approvals_does_not_take_a_gated_step(mesh: Mesh) -> None:
    """`/mesh resume` typed on a rollout whose next step waits for approvers is refused, and
    the rollout and its weights stay where they were."""
    from jobs.domain.rollout import Phase
    from tests.integration.chatops import ChatOps

    now = time.time()
    rollout = start(rollout_id="r-2", service=SERVICE, namespace="production", steps=(10, 50),
                    fixed=False, interval_s=30, failure_threshold=3, no_data_policy="hold",
                    deadline_s=600, requested_by=OPERATOR, channel=CHANNEL, now=now)
    RolloutStore(mesh.redis).put(apply(rollout, Event.GATE, now))
    canary_at(mesh, 10)
    ops = ChatOps.start(mesh)

    _, url = ops.command(f"resume {SERVICE}")
    ops.run()

    assert any("next step waits for approval" in t for t in ops.told(url)), ops.told(url)
    gated = RolloutStore(mesh.redis).get(SERVICE)
    assert gated is not None and gated.phase is Phase.AWAITING_APPROVAL and gated.weight == 10
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
