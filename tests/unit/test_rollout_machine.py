"""The rollout state machine: every transition, and every refusal, as the thread would show it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from jobs.domain.rollout import TERMINAL, Event, Phase, Rollout, Transition, apply, start
from meshbot.errors import Refused

T0 = 1_000.0
INTERVAL = 30.0


def new(
    steps: tuple[int, ...] = (5, 10, 25, 50),
    *,
    fixed: bool = False,
    threshold: int = 3,
    no_data: str = "hold",
    deadline: float = 600.0,
) -> Rollout:
    return start(
        rollout_id="r-1",
        service="payment-service",
        namespace="production",
        steps=steps,
        fixed=fixed,
        interval_s=INTERVAL,
        failure_threshold=threshold,
        no_data_policy=no_data,
        deadline_s=deadline,
        requested_by="U0OPERATOR1",
        channel="C0MESHOPS",
        now=T0,
    )


def at(phase: Phase, **changes: Any) -> Rollout:
    """A rollout put directly in ``phase`` (as if loaded from Redis)."""
    return new().model_copy(update={"phase": phase, **changes})


def run(rollout: Rollout, *events: Event, now: float = T0) -> Rollout:
    for i, event in enumerate(events, start=1):
        rollout = apply(rollout, event, now + i)
    return rollout


# ----------------------------------------------------------------------------------- start


def test_start_is_progressing_at_the_first_step() -> None:
    rollout = new()
    assert rollout.phase is Phase.PROGRESSING
    assert rollout.step_index == 0
    assert rollout.weight == 5
    assert rollout.step_weight == 5
    assert rollout.failed_checks == 0
    assert rollout.holding_since is None
    assert rollout.next_check_at == T0 + INTERVAL
    assert rollout.service == "payment-service"
    assert rollout.requested_by == "U0OPERATOR1"


def test_start_records_one_timestamped_transition() -> None:
    (record,) = new().history
    assert record.at == T0
    assert record.after is Phase.PROGRESSING
    assert record.weight == 5


def test_start_without_steps_is_refused() -> None:
    with pytest.raises(Refused) as info:
        new(steps=())
    assert "at least one step" in info.value.message


# ------------------------------------------------------------------------------ advancing


def test_check_passed_advances_one_step_and_resets_failed_checks() -> None:
    rollout = apply(new(), Event.CHECK_FAILED, T0 + 30)
    assert rollout.failed_checks == 1
    rollout = apply(rollout, Event.CHECK_PASSED, T0 + 60)
    assert rollout.phase is Phase.PROGRESSING
    assert rollout.step_index == 1
    assert rollout.weight == 10
    assert rollout.failed_checks == 0
    assert rollout.passed_checks == 1
    assert rollout.next_check_at == T0 + 60 + INTERVAL


def test_each_passed_check_moves_to_the_next_step_in_order() -> None:
    rollout = new()
    weights = [rollout.weight]
    for i in range(3):
        rollout = apply(rollout, Event.CHECK_PASSED, T0 + i)
        weights.append(rollout.weight)
    assert weights == [5, 10, 25, 50]
    assert rollout.phase is Phase.PROGRESSING
    assert rollout.last_step


def test_passing_the_last_step_is_ready_to_promote_at_the_same_weight() -> None:
    rollout = run(new(), Event.CHECK_PASSED, Event.CHECK_PASSED, Event.CHECK_PASSED)
    rollout = apply(rollout, Event.CHECK_PASSED, T0 + 100)
    assert rollout.phase is Phase.READY_TO_PROMOTE
    assert rollout.weight == 50
    assert rollout.step_index == 3


def test_single_step_rollout_is_ready_after_one_pass() -> None:
    rollout = apply(new(steps=(20,)), Event.CHECK_PASSED, T0 + 30)
    assert rollout.phase is Phase.READY_TO_PROMOTE
    assert rollout.weight == 20


def test_fixed_canary_never_advances() -> None:
    rollout = new(steps=(10,), fixed=True)
    for i in range(1, 6):
        rollout = apply(rollout, Event.CHECK_PASSED, T0 + 30 * i)
        assert rollout.phase is Phase.PROGRESSING
        assert rollout.weight == 10
        assert rollout.step_index == 0
    assert rollout.passed_checks == 5
    assert rollout.next_check_at == T0 + 150 + INTERVAL


def test_check_passed_is_refused_when_ready_to_promote() -> None:
    ready = at(Phase.READY_TO_PROMOTE)
    with pytest.raises(Refused):
        apply(ready, Event.CHECK_PASSED, T0)


# -------------------------------------------------------------------------------- failing


def test_check_failed_below_threshold_keeps_progressing_at_the_same_weight() -> None:
    rollout = apply(new(threshold=3), Event.CHECK_FAILED, T0 + 30)
    rollout = apply(rollout, Event.CHECK_FAILED, T0 + 60)
    assert rollout.phase is Phase.PROGRESSING
    assert rollout.failed_checks == 2
    assert rollout.weight == 5
    assert rollout.next_check_at == T0 + 60 + INTERVAL


@pytest.mark.parametrize("threshold", [1, 2, 3, 5])
def test_check_failed_at_threshold_rolls_back_to_weight_zero(threshold: int) -> None:
    rollout = apply(new(threshold=threshold), Event.CHECK_PASSED, T0)
    for i in range(threshold - 1):
        rollout = apply(rollout, Event.CHECK_FAILED, T0 + i + 1)
        assert rollout.phase is Phase.PROGRESSING
    rollout = apply(rollout, Event.CHECK_FAILED, T0 + 100)
    assert rollout.phase is Phase.ROLLED_BACK
    assert rollout.weight == 0
    assert rollout.failed_checks == threshold
    assert rollout.history[-1].weight == 0


def test_a_pass_between_failures_restarts_the_count() -> None:
    rollout = run(new(threshold=2), Event.CHECK_FAILED, Event.CHECK_PASSED, Event.CHECK_FAILED)
    assert rollout.phase is Phase.PROGRESSING
    assert rollout.failed_checks == 1


def test_check_failed_from_holding_counts_and_leaves_holding() -> None:
    holding = apply(new(), Event.NO_DATA, T0 + 30)
    rollout = apply(holding, Event.CHECK_FAILED, T0 + 60)
    assert rollout.phase is Phase.PROGRESSING
    assert rollout.failed_checks == 1
    assert rollout.holding_since is None


def test_check_failed_from_holding_at_threshold_rolls_back() -> None:
    rollout = run(new(threshold=2), Event.CHECK_FAILED, Event.NO_DATA, Event.CHECK_FAILED)
    assert rollout.phase is Phase.ROLLED_BACK
    assert rollout.weight == 0


# -------------------------------------------------------------------------------- no data


def test_no_data_holds_and_remembers_when_holding_began() -> None:
    rollout = apply(new(), Event.NO_DATA, T0 + 30)
    assert rollout.phase is Phase.HOLDING
    assert rollout.holding_since == T0 + 30
    assert rollout.weight == 5  # no promotion, no step, without evidence
    assert rollout.step_index == 0
    rollout = apply(rollout, Event.NO_DATA, T0 + 60)
    rollout = apply(rollout, Event.NO_DATA, T0 + 90)
    assert rollout.phase is Phase.HOLDING
    assert rollout.holding_since == T0 + 30
    assert rollout.next_check_at == T0 + 90 + INTERVAL


@pytest.mark.parametrize("policy", ["hold", "rollback"])
def test_no_data_within_the_deadline_holds_whatever_the_policy(policy: str) -> None:
    rollout = apply(new(no_data=policy, deadline=600), Event.NO_DATA, T0 + 30)
    rollout = apply(rollout, Event.NO_DATA, T0 + 30 + 599)
    assert rollout.phase is Phase.HOLDING
    assert rollout.weight == 5


def test_no_data_past_the_deadline_with_rollback_policy_rolls_back() -> None:
    rollout = apply(new(no_data="rollback", deadline=600), Event.NO_DATA, T0 + 30)
    rollout = apply(rollout, Event.NO_DATA, T0 + 30 + 601)
    assert rollout.phase is Phase.ROLLED_BACK
    assert rollout.weight == 0


def test_no_data_past_the_deadline_with_hold_policy_keeps_holding() -> None:
    rollout = apply(new(no_data="hold", deadline=600), Event.NO_DATA, T0 + 30)
    rollout = apply(rollout, Event.NO_DATA, T0 + 30 + 10_000)
    assert rollout.phase is Phase.HOLDING
    assert rollout.weight == 5
    assert rollout.holding_since == T0 + 30


def test_check_passed_from_holding_clears_holding_and_advances() -> None:
    holding = apply(new(), Event.NO_DATA, T0 + 30)
    rollout = apply(holding, Event.CHECK_PASSED, T0 + 60)
    assert rollout.phase is Phase.PROGRESSING
    assert rollout.holding_since is None
    assert rollout.weight == 10


def test_holding_clock_restarts_after_data_returns() -> None:
    rollout = new(no_data="rollback", deadline=600)
    rollout = apply(rollout, Event.NO_DATA, T0)
    rollout = apply(rollout, Event.CHECK_PASSED, T0 + 500)
    rollout = apply(rollout, Event.NO_DATA, T0 + 700)
    assert rollout.phase is Phase.HOLDING
    assert rollout.holding_since == T0 + 700


# ---------------------------------------------------------------------------- pause/resume


@pytest.mark.parametrize("before", [Phase.PROGRESSING, Phase.HOLDING])
def test_pause_then_resume(before: Phase) -> None:
    rollout = at(before, holding_since=T0 if before is Phase.HOLDING else None)
    paused = apply(rollout, Event.PAUSE, T0 + 5)
    assert paused.phase is Phase.PAUSED
    assert paused.weight == rollout.weight
    resumed = apply(paused, Event.RESUME, T0 + 50)
    assert resumed.phase is Phase.PROGRESSING
    assert resumed.weight == rollout.weight
    assert resumed.next_check_at == T0 + 50 + INTERVAL


@pytest.mark.parametrize("phase", [p for p in Phase if p is not Phase.PAUSED])
def test_resume_only_from_paused(phase: Phase) -> None:
    with pytest.raises(Refused) as info:
        apply(at(phase), Event.RESUME, T0)
    assert "cannot resume" in info.value.message


@pytest.mark.parametrize(
    "phase", [Phase.PAUSED, Phase.READY_TO_PROMOTE, Phase.AWAITING_APPROVAL, *sorted(TERMINAL)]
)
def test_pause_is_refused_outside_progressing_and_holding(phase: Phase) -> None:
    with pytest.raises(Refused):
        apply(at(phase), Event.PAUSE, T0)


@pytest.mark.parametrize("event", [Event.CHECK_PASSED, Event.CHECK_FAILED, Event.NO_DATA])
def test_a_paused_rollout_takes_no_analysis_results(event: Event) -> None:
    paused = apply(new(), Event.PAUSE, T0)
    with pytest.raises(Refused) as info:
        apply(paused, event, T0 + 30)
    assert "payment-service is paused" in info.value.message


# ------------------------------------------------------------------------------- approvals


def test_gate_awaits_approval_and_approval_takes_the_next_step() -> None:
    rollout = apply(new(), Event.CHECK_PASSED, T0)
    gated = apply(rollout, Event.GATE, T0 + 10, "step 50 crosses canary_above 25")
    assert gated.phase is Phase.AWAITING_APPROVAL
    assert gated.weight == 10
    approved = apply(gated, Event.APPROVED, T0 + 20)
    assert approved.phase is Phase.PROGRESSING
    assert (approved.step_index, approved.weight) == (2, 25)
    assert approved.resume_phase is None
    assert approved.next_check_at == T0 + 20 + INTERVAL


def test_checks_go_on_while_a_step_awaits_approval() -> None:
    gated = apply(new(threshold=2), Event.GATE, T0)
    assert gated.phase.watched
    waiting = apply(gated, Event.CHECK_PASSED, T0 + 1)
    assert (waiting.phase, waiting.weight) == (Phase.AWAITING_APPROVAL, 5)
    once = apply(waiting, Event.CHECK_FAILED, T0 + 2)
    assert once.phase is Phase.AWAITING_APPROVAL
    twice = apply(once, Event.CHECK_FAILED, T0 + 3)
    assert (twice.phase, twice.weight) == (Phase.ROLLED_BACK, 0)


def test_a_rejected_step_stays_watched_where_it_was_and_never_advances() -> None:
    gated = apply(new(), Event.GATE, T0)
    rejected = apply(gated, Event.REJECTED, T0 + 1)
    assert (rejected.phase, rejected.weight, rejected.fixed) == (Phase.PROGRESSING, 5, True)
    assert apply(rejected, Event.CHECK_PASSED, T0 + 2).weight == 5


def test_gated_promote_approval_returns_to_ready_to_promote() -> None:
    gated = apply(at(Phase.READY_TO_PROMOTE), Event.GATE, T0)
    assert gated.phase is Phase.AWAITING_APPROVAL
    assert apply(gated, Event.APPROVED, T0 + 1).phase is Phase.READY_TO_PROMOTE


@pytest.mark.parametrize("answer", [Event.REJECTED, Event.EXPIRED])
@pytest.mark.parametrize("before", [Phase.PROGRESSING, Phase.READY_TO_PROMOTE])
def test_rejection_or_expiry_leaves_the_rollout_where_it_was(answer: Event, before: Phase) -> None:
    rollout = at(before)
    gated = apply(rollout, Event.GATE, T0)
    back = apply(gated, answer, T0 + 1)
    assert back.phase is before
    assert back.weight == rollout.weight
    assert back.step_index == rollout.step_index
    assert back.resume_phase is None


@pytest.mark.parametrize("answer", [Event.REJECTED, Event.EXPIRED])
def test_rejection_of_a_request_that_never_started_cancels_it(answer: Event) -> None:
    request = at(Phase.AWAITING_APPROVAL, weight=0, resume_phase=None)
    cancelled = apply(request, answer, T0)
    assert cancelled.phase is Phase.CANCELLED
    assert cancelled.weight == 0


def test_approval_of_a_request_that_never_started_starts_progressing() -> None:
    request = at(Phase.AWAITING_APPROVAL, resume_phase=None)
    assert apply(request, Event.APPROVED, T0).phase is Phase.PROGRESSING


@pytest.mark.parametrize("event", [Event.APPROVED, Event.REJECTED, Event.EXPIRED])
@pytest.mark.parametrize("phase", [p for p in Phase if p is not Phase.AWAITING_APPROVAL])
def test_approval_answers_need_a_pending_approval(event: Event, phase: Phase) -> None:
    with pytest.raises(Refused):
        apply(at(phase), event, T0)


@pytest.mark.parametrize("phase", [Phase.PAUSED, Phase.AWAITING_APPROVAL, *sorted(TERMINAL)])
def test_gate_only_from_progressing_holding_or_ready(phase: Phase) -> None:
    with pytest.raises(Refused):
        apply(at(phase), Event.GATE, T0)


# ------------------------------------------------------------------ rollback/abort/promote


@pytest.mark.parametrize("phase", [p for p in Phase if p is not Phase.ROLLED_BACK])
def test_rollback_is_allowed_from_every_phase_but_rolled_back(phase: Phase) -> None:
    rollout = apply(at(phase, weight=25, resume_phase=Phase.PROGRESSING), Event.ROLLBACK, T0)
    assert rollout.phase is Phase.ROLLED_BACK
    assert rollout.weight == 0
    assert rollout.resume_phase is None


def test_rollback_of_a_rolled_back_rollout_is_refused() -> None:
    rolled_back = apply(new(), Event.ROLLBACK, T0)
    with pytest.raises(Refused) as info:
        apply(rolled_back, Event.ROLLBACK, T0 + 1)
    assert info.value.message == "payment-service is rolled back: cannot rollback"


@pytest.mark.parametrize(
    "phase",
    [
        Phase.AWAITING_APPROVAL,
        Phase.PROGRESSING,
        Phase.HOLDING,
        Phase.PAUSED,
        Phase.READY_TO_PROMOTE,
    ],
)
def test_abort_rolls_back_from_any_live_phase(phase: Phase) -> None:
    rollout = apply(at(phase, weight=25), Event.ABORT, T0)
    assert rollout.phase is Phase.ROLLED_BACK
    assert rollout.weight == 0


def test_promote_from_ready_is_promoted_at_weight_100() -> None:
    ready = run(new(steps=(5, 10)), Event.CHECK_PASSED, Event.CHECK_PASSED)
    assert ready.phase is Phase.READY_TO_PROMOTE
    promoted = apply(ready, Event.PROMOTE, T0 + 100)
    assert promoted.phase is Phase.PROMOTED
    assert promoted.weight == 100
    assert promoted.history[-1].weight == 100


# ------------------------------------------------------------------------------ terminal


@pytest.mark.parametrize("event", [e for e in Event if e is not Event.ROLLBACK])
@pytest.mark.parametrize("phase", sorted(TERMINAL))
def test_terminal_phases_refuse_further_events(phase: Phase, event: Event) -> None:
    done = at(phase)
    with pytest.raises(Refused) as info:
        apply(done, event, T0)
    message = info.value.message
    assert "payment-service" in message
    assert phase.value.replace("_", " ") in message
    assert event.value.replace("_", " ") in message


def test_terminal_phases_are_exactly_promoted_rolled_back_cancelled() -> None:
    assert {p for p in Phase if p.terminal} == {Phase.PROMOTED, Phase.ROLLED_BACK, Phase.CANCELLED}
    assert {p for p in Phase if p.watched} == {
        Phase.PROGRESSING, Phase.HOLDING, Phase.AWAITING_APPROVAL}


def test_refusal_names_service_and_phase() -> None:
    with pytest.raises(Refused) as info:
        apply(at(Phase.PROMOTED), Event.PAUSE, T0)
    assert info.value.message == "payment-service is promoted: cannot pause"


# ------------------------------------------------------------------------------- history


def test_history_gets_one_timestamped_transition_per_event() -> None:
    rollout = new(steps=(5, 50))
    script = [
        (Event.CHECK_PASSED, Phase.PROGRESSING, Phase.PROGRESSING, 50),
        (Event.NO_DATA, Phase.PROGRESSING, Phase.HOLDING, 50),
        (Event.PAUSE, Phase.HOLDING, Phase.PAUSED, 50),
        (Event.RESUME, Phase.PAUSED, Phase.PROGRESSING, 50),
        (Event.CHECK_PASSED, Phase.PROGRESSING, Phase.READY_TO_PROMOTE, 50),
        (Event.GATE, Phase.READY_TO_PROMOTE, Phase.AWAITING_APPROVAL, 50),
        (Event.APPROVED, Phase.AWAITING_APPROVAL, Phase.READY_TO_PROMOTE, 50),
        (Event.PROMOTE, Phase.READY_TO_PROMOTE, Phase.PROMOTED, 100),
    ]
    for i, (event, before, after, weight) in enumerate(script, start=1):
        now = T0 + 10 * i
        previous = rollout
        rollout = apply(rollout, event, now, f"detail {i}")
        assert rollout.history[:-1] == previous.history
        assert rollout.history[-1] == Transition(
            at=now, event=event, before=before, after=after, weight=weight, detail=f"detail {i}"
        )
    assert len(rollout.history) == 1 + len(script)
    assert [t.at for t in rollout.history] == sorted(t.at for t in rollout.history)


def test_a_refused_event_leaves_no_trace() -> None:
    rollout = new()
    with pytest.raises(Refused):
        apply(rollout, Event.RESUME, T0 + 1)
    assert len(rollout.history) == 1
    assert rollout.phase is Phase.PROGRESSING


# -------------------------------------------------------------------------------- frozen


def test_rollout_is_frozen_and_apply_returns_a_new_value() -> None:
    rollout = new()
    with pytest.raises(ValidationError):
        rollout.phase = Phase.PROMOTED  # type: ignore[misc]
    after = apply(rollout, Event.CHECK_PASSED, T0 + 30)
    assert after is not rollout
    assert rollout.weight == 5
    assert rollout.step_index == 0
    assert len(rollout.history) == 1
    with pytest.raises(ValidationError):
        after.history[-1].weight = 0  # type: ignore[misc]


def test_rollout_round_trips_through_json() -> None:
    rollout = run(new(), Event.CHECK_PASSED, Event.NO_DATA, Event.PAUSE)
    assert Rollout.model_validate_json(rollout.model_dump_json()) == rollout


# ------------------------------------------------------------- no promotion without evidence


@pytest.mark.parametrize("phase", [Phase.HOLDING, Phase.PAUSED, Phase.AWAITING_APPROVAL])
def test_promote_is_refused_without_slo_evidence(phase: Phase) -> None:
    with pytest.raises(Refused):
        apply(at(phase), Event.PROMOTE, T0)


def test_a_progressing_rollout_cannot_be_promoted_before_its_last_step() -> None:
    with pytest.raises(Refused, match="no SLO evidence"):
        apply(new(), Event.PROMOTE, T0)


def test_a_fixed_canary_is_promoted_only_after_a_passed_check() -> None:
    canary = new((10,), fixed=True)
    with pytest.raises(Refused, match="no SLO evidence"):
        apply(canary, Event.PROMOTE, T0)
    checked = apply(canary, Event.CHECK_PASSED, T0 + 1)
    assert apply(checked, Event.PROMOTE, T0 + 2).phase is Phase.PROMOTED
    failing = apply(checked, Event.CHECK_FAILED, T0 + 3)
    with pytest.raises(Refused):
        apply(failing, Event.PROMOTE, T0 + 4)


def test_a_canary_watched_for_a_day_keeps_a_short_history() -> None:
    """~2,900 checks a day at a 30 s interval: identical checks in a row are one entry (with
    how many and since when), and the history never outgrows its cap."""
    from jobs.domain.rollout import MAX_HISTORY, Event, apply, start

    now = 1_000_000.0
    rollout = start(rollout_id="r", service="svc", namespace="ns", steps=(10,), fixed=True,
                    interval_s=30, failure_threshold=3, no_data_policy="hold", deadline_s=600,
                    requested_by="U1", channel="C1", now=now)
    for i in range(1, 2_900):
        rollout = apply(rollout, Event.CHECK_PASSED, now + 30 * i)
    assert len(rollout.history) <= 3
    last = rollout.history[-1]
    assert last.event is Event.CHECK_PASSED and last.at == now + 30 * 2_899
    assert last.repeated >= 2_800 and last.first_at is not None and last.first_at < last.at
    for i in range(3_000):  # alternating outcomes cannot be merged: the cap holds
        event = Event.NO_DATA if i % 2 else Event.CHECK_PASSED
        rollout = apply(rollout, event, now + 90_000 + 30 * i)
    assert len(rollout.history) == MAX_HISTORY
    assert rollout.history[0].at == now  # the start is kept
