"""A running canary moved to another weight, and when a promote would be taken: the pure rules
in ``jobs.domain.rollout`` (``move``, ``movable``, ``promotable``)."""

from __future__ import annotations

import pytest

from jobs.domain.rollout import Event, Phase, Rollout, apply, movable, move, promotable, start
from meshbot.errors import Refused

T0 = 1_000.0


def canary(weight: int = 10, *, fixed: bool = True,
           steps: tuple[int, ...] | None = None) -> Rollout:
    return start(rollout_id="r-1", service="payment-service", namespace="production",
                 steps=steps or (weight,), fixed=fixed, interval_s=30.0, failure_threshold=3,
                 no_data_policy="hold", deadline_s=600.0, requested_by="U0OPERATOR1",
                 channel="C0MESHOPS", now=T0)


def test_a_move_keeps_the_rollout_and_gathers_evidence_again() -> None:
    passed = apply(canary(), Event.CHECK_PASSED, T0 + 30)
    failed_once = apply(passed, Event.CHECK_FAILED, T0 + 60)
    assert promotable(passed) and not promotable(failed_once)
    moved = move(passed, 30, T0 + 40, "req-2", "by <@U0OPERATOR1>")
    assert (moved.id, moved.weight, moved.steps, moved.step_index) == ("r-1", 30, (30,), 0)
    assert moved.phase is Phase.PROGRESSING and moved.fixed
    assert moved.baseline is None and moved.needs_baseline  # compared afresh at 30 %
    assert moved.passed_checks == 0 and not promotable(moved)
    assert (moved.moved_by, moved.moved_from) == ("req-2", 10)
    assert moved.next_check_at == T0 + 70
    last = moved.history[-1]
    assert (last.event, last.before, last.after, last.weight) == (
        Event.MOVE, Phase.PROGRESSING, Phase.PROGRESSING, 30)
    assert move(failed_once, 20, T0 + 70, "req-3").failed_checks == 1  # failures are kept


def test_only_a_running_fixed_canary_moves() -> None:
    assert movable(canary())
    assert movable(apply(canary(), Event.NO_DATA, T0 + 30))  # holding
    stepped = canary(steps=(5, 10, 25), fixed=False)
    paused = apply(canary(), Event.PAUSE, T0 + 1)
    rolled_back = apply(canary(), Event.ROLLBACK, T0 + 1)
    for rollout in (stepped, paused, rolled_back):
        assert not movable(rollout)
        with pytest.raises(Refused):
            move(rollout, 30, T0 + 2, "req-2")
    for weight in (0, 100):
        with pytest.raises(Refused):
            move(canary(), weight, T0 + 2, "req-2")
    with pytest.raises(Refused):
        apply(canary(), Event.MOVE, T0 + 2)  # a move needs its weight


def test_a_rollout_is_promotable_once_its_last_step_passed() -> None:
    stepped = canary(steps=(5, 10), fixed=False)
    assert not promotable(stepped)
    mid = apply(stepped, Event.CHECK_PASSED, T0 + 30)
    assert mid.weight == 10 and not promotable(mid)
    last = apply(mid, Event.CHECK_PASSED, T0 + 60)
    assert last.phase is Phase.READY_TO_PROMOTE and promotable(last)
    assert not promotable(canary())  # a canary without a passed check
