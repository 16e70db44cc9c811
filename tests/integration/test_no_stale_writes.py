"""No writer puts back a split the rollout has moved past: a taken-over job of the request that
started a rollout goes on from where the rollout is (never from its first step again), and a
write whose step was overtaken by a later tick is abandoned before it reaches the API."""

from __future__ import annotations

from typing import Any

import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from jobs.adapters.rollout_store import RolloutStore
from jobs.domain.rollout import Event, apply
from jobs.domain.routes import Weights
from jobs.runtime import api, context
from jobs.runtime.handlers.traffic import apply_weight
from jobs.runtime.weights import Abandoned
from meshbot.commands import Verb
from tests.fixtures.meshbot import EmulatedMesh
from tests.integration.test_worker_jobs import GROUP, NS, SERVICE, VERSION, submit


def set_split(mesh: EmulatedMesh, canary: int) -> None:
    def split(vs: dict[str, Any]) -> None:
        for destination in vs["spec"]["http"][0]["route"]:
            is_canary = destination["destination"]["subset"] == "canary"
            destination["weight"] = canary if is_canary else 100 - canary
    mesh.cluster.change(GROUP, VERSION, "virtualservices", NS, SERVICE, split)


def advance_as_the_tick_would(mesh: EmulatedMesh) -> int:
    """Passed checks until the rollout takes its next step, and that step's split written, as
    the tick does; the new weight."""
    store = RolloutStore(mesh.redis)
    rollout = store.get(SERVICE)
    assert rollout is not None
    first = rollout.weight
    for _ in range(10):
        rollout = apply(rollout, Event.CHECK_PASSED, rollout.next_check_at)
        if rollout.weight != first:
            break
    assert rollout.weight != first, rollout.history
    store.put(rollout)
    set_split(mesh, rollout.weight)
    return rollout.weight


def test_a_taken_over_rollout_job_goes_on_from_where_the_rollout_is(
        emulated_mesh: EmulatedMesh) -> None:
    mesh = emulated_mesh
    request = submit(mesh, Verb.ROLLOUT)  # the policy's steps; the first is 10
    mesh.run_jobs()
    first = mesh.weights(SERVICE)["canary"]
    assert first > 0
    second = advance_as_the_tick_would(mesh)
    # The same job, put back on its queue (what the takeover does for a dead worker's job).
    Queue("meshbot", connection=mesh.redis, serializer=JSONSerializer).enqueue_call(
        api.TASK, args=(request.model_dump(mode="json"),), job_id=api.job_id(request.id))
    mesh.run_jobs()
    assert mesh.weights(SERVICE) == {"stable": 100 - second, "canary": second}
    rollout = RolloutStore(mesh.redis).get(SERVICE)
    assert rollout is not None and rollout.weight == second and rollout.step_index == 1


def test_a_write_of_a_step_the_rollout_moved_past_is_abandoned(
        emulated_mesh: EmulatedMesh) -> None:
    mesh = emulated_mesh
    submit(mesh, Verb.ROLLOUT)
    mesh.run_jobs()
    stale = RolloutStore(mesh.redis).get(SERVICE)  # what a slow tick still holds: step 10
    assert stale is not None
    second = advance_as_the_tick_would(mesh)
    ctx = context.current()
    view = ctx.policy.service(SERVICE)
    assert view is not None
    with pytest.raises(Abandoned):
        apply_weight(ctx, view, stale, Weights.canary_at(stale.weight))
    assert mesh.weights(SERVICE) == {"stable": 100 - second, "canary": second}
