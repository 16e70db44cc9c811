"""The rollout state machine: pure data in, pure data out (persisted by ``jobs.store``).

One rollout per service at a time. Every transition is timestamped in ``history`` so the thread
and the audit can say what happened when. A fixed-weight canary is a rollout with one step that
never advances.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from jobs.domain.comparison import Baseline
from jobs.domain.routes import Subsets
from meshbot.errors import Refused


class Phase(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    PROGRESSING = "progressing"
    HOLDING = "holding"
    PAUSED = "paused"
    READY_TO_PROMOTE = "ready_to_promote"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def watched(self) -> bool:
        """Phases whose analysis ticks run. A rollout waiting mid-way for approval of its next
        step still carries canary traffic, so its checks go on (and can roll it back)."""
        return self in (Phase.PROGRESSING, Phase.HOLDING, Phase.AWAITING_APPROVAL)


TERMINAL = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK, Phase.CANCELLED})


class Event(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    GATE = "gate"  # the next step needs approval
    CHECK_PASSED = "check_passed"
    CHECK_FAILED = "check_failed"
    NO_DATA = "no_data"
    REGRESSION = "regression"  # the canary is worse than the stable, conclusively: roll back
    SERVICE_WIDE = "service_wide"  # the stable fails the same SLO as badly: hold, no blame
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    ROLLBACK = "rollback"
    PROMOTE = "promote"
    MOVE = "move"  # a running canary moved to a new fixed weight


class Transition(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: float
    event: Event
    before: Phase
    after: Phase
    weight: int
    detail: str = ""
    # Identical checks in a row (same event, phases and weight) are one entry: how many, and
    # when the first of them was; ``at`` is the latest. A canary watched for a day is not a
    # document of thousands of entries rewritten on every check.
    repeated: int = 1
    first_at: float | None = None


MAX_HISTORY = 200  # the first transition (the start) and the latest ones
class Rollout(BaseModel):
    """The persisted state of one service's rollout."""

    model_config = ConfigDict(frozen=True)

    id: str
    service: str
    namespace: str
    phase: Phase
    steps: tuple[int, ...]
    step_index: int = 0
    weight: int = 0
    fixed: bool = False
    interval_s: float = 30.0
    failure_threshold: int = 3
    no_data_policy: str = "hold"
    deadline_s: float = 600.0
    failed_checks: int = 0
    passed_checks: int = 0
    holding_since: float | None = None
    next_check_at: float = 0.0
    stable_subset: str = "stable"
    canary_subset: str = "canary"
    canary_version: str = ""  # the version label value of the canary subset's pods
    stable_version: str = ""  # ... and of the stable subset's (compared with the canary)
    # Where the current step's canary-vs-stable comparison counts from (None: not taken yet).
    baseline: Baseline | None = None
    service_wide_since: float | None = None  # the stable as bad as the canary since then
    title: str = ""  # the thread root's first line, kept when the status below it changes
    # A blue-green: once its step passed, meshbot asks for the cutover itself (no command).
    bluegreen: bool = False
    requested_by: str = ""
    channel: str = ""
    thread_ts: str | None = None
    status_ts: str | None = None
    resume_phase: Phase | None = None
    moved_by: str = ""  # the request that last moved this canary (a retry re-applies it)
    moved_from: int | None = None  # ... and the weight it moved from
    # The writer (its mark's owner) whose unwritten change the reconcile rolled this rollout
    # back for: a later tick that writes the rollback says why, not that a worker stopped.
    settled_for: str = ""
    last_values: tuple[str, ...] = ()
    history: tuple[Transition, ...] = ()

    @property
    def step_weight(self) -> int:
        return self.steps[self.step_index]

    @property
    def subsets(self) -> Subsets:
        """The subsets in their roles for this rollout (they swap after each promote)."""
        return Subsets(stable=self.stable_subset, canary=self.canary_subset)

    @property
    def last_step(self) -> bool:
        return self.step_index >= len(self.steps) - 1

    @property
    def needs_baseline(self) -> bool:
        """Watched, and its step's comparison has no baseline yet: the tick takes one as soon
        as it can (the store makes such a rollout due at once)."""
        return self.phase.watched and (self.baseline is None
                                       or self.baseline.step_index != self.step_index)


_ALLOWED: dict[Event, frozenset[Phase]] = {
    Event.APPROVED: frozenset({Phase.AWAITING_APPROVAL}),
    Event.REJECTED: frozenset({Phase.AWAITING_APPROVAL}),
    Event.EXPIRED: frozenset({Phase.AWAITING_APPROVAL}),
    Event.GATE: frozenset({Phase.PROGRESSING, Phase.HOLDING, Phase.READY_TO_PROMOTE}),
    Event.CHECK_PASSED: frozenset({Phase.PROGRESSING, Phase.HOLDING, Phase.AWAITING_APPROVAL}),
    Event.CHECK_FAILED: frozenset({Phase.PROGRESSING, Phase.HOLDING, Phase.AWAITING_APPROVAL}),
    Event.NO_DATA: frozenset({Phase.PROGRESSING, Phase.HOLDING, Phase.AWAITING_APPROVAL}),
    Event.REGRESSION: frozenset({Phase.PROGRESSING, Phase.HOLDING, Phase.AWAITING_APPROVAL}),
    Event.SERVICE_WIDE: frozenset({Phase.PROGRESSING, Phase.HOLDING, Phase.AWAITING_APPROVAL}),
    Event.PAUSE: frozenset({Phase.PROGRESSING, Phase.HOLDING}),
    Event.RESUME: frozenset({Phase.PAUSED}),
    Event.ABORT: frozenset(
        {
            Phase.AWAITING_APPROVAL,
            Phase.PROGRESSING,
            Phase.HOLDING,
            Phase.PAUSED,
            Phase.READY_TO_PROMOTE,
        }
    ),
    Event.ROLLBACK: frozenset(set(Phase) - {Phase.ROLLED_BACK}),
    # From progressing only a fixed canary whose last check passed (see ``apply``): no
    # promotion without SLO evidence.
    Event.PROMOTE: frozenset({Phase.READY_TO_PROMOTE, Phase.PROGRESSING}),
    # Only a canary watched at a fixed weight (see ``movable``).
    Event.MOVE: frozenset({Phase.PROGRESSING, Phase.HOLDING}),
}


def _move(
    rollout: Rollout, event: Event, now: float, phase: Phase, detail: str = "", **changes: object
) -> Rollout:
    weight = changes.get("weight", rollout.weight)
    record = Transition(at=now, event=event, before=rollout.phase, after=phase,
                        weight=weight if isinstance(weight, int) else rollout.weight,
                        detail=detail)
    # One copy, not two: a tick moves a thousand rollouts.
    return rollout.model_copy(update={"phase": phase, **changes,
                                      "history": _appended(rollout.history, record)})


def _appended(history: tuple[Transition, ...], record: Transition) -> tuple[Transition, ...]:
    last = history[-1] if history else None
    if (last is not None and record.event in _CHECKS and len(history) > 1
            and (last.event, last.before, last.after, last.weight)
            == (record.event, record.before, record.after, record.weight)):
        merged = record.model_copy(update={"repeated": last.repeated + 1,
                                           "first_at": last.first_at or last.at})
        return (*history[:-1], merged)
    longer = (*history, record)
    if len(longer) > MAX_HISTORY:
        longer = (longer[0], *longer[len(longer) - MAX_HISTORY + 1:])
    return longer


_CHECKS = frozenset({Event.CHECK_PASSED, Event.CHECK_FAILED, Event.NO_DATA})


def _gated_mid_rollout(rollout: Rollout) -> bool:
    return rollout.resume_phase in (Phase.PROGRESSING, Phase.HOLDING) and not rollout.last_step


def _checked_while_gated(rollout: Rollout, event: Event, now: float, detail: str) -> Rollout:
    """Checks go on while a step waits for approval: a pass keeps waiting, failures and missing
    data roll back exactly as they would at this step without the gate."""
    following = now + rollout.interval_s
    if event is Event.CHECK_PASSED:
        return _move(rollout, event, now, Phase.AWAITING_APPROVAL, detail,
                     passed_checks=rollout.passed_checks + 1, failed_checks=0,
                     holding_since=None, next_check_at=following)
    if event is Event.CHECK_FAILED:
        failed = rollout.failed_checks + 1
        if failed >= rollout.failure_threshold:
            return _move(rollout, event, now, Phase.ROLLED_BACK, detail, weight=0,
                         failed_checks=failed, resume_phase=None)
        return _move(rollout, event, now, Phase.AWAITING_APPROVAL, detail, failed_checks=failed,
                     next_check_at=following)
    since = rollout.holding_since if rollout.holding_since is not None else now
    if rollout.no_data_policy == "rollback" and now - since >= rollout.deadline_s:
        return _move(rollout, event, now, Phase.ROLLED_BACK, detail, weight=0,
                     resume_phase=None)
    return _move(rollout, event, now, Phase.AWAITING_APPROVAL, detail, holding_since=since,
                 next_check_at=following)


def _healthy_fixed_canary(rollout: Rollout) -> bool:
    return rollout.fixed and rollout.passed_checks > 0 and rollout.failed_checks == 0


def promotable(rollout: Rollout) -> bool:
    """Whether a promote would be taken now: a rollout whose last step passed, or a canary
    (fixed weight) with a passed check and no failure since."""
    return rollout.phase is Phase.READY_TO_PROMOTE or (
        rollout.phase is Phase.PROGRESSING and _healthy_fixed_canary(rollout))


def movable(rollout: Rollout) -> bool:
    """Whether ``/mesh canary`` may move this rollout to another weight: a canary watched at a
    fixed weight (not a stepped rollout, not paused, not waiting for approval)."""
    return rollout.fixed and rollout.phase in _ALLOWED[Event.MOVE]


def move(rollout: Rollout, weight: int, now: float, request_id: str,
         detail: str = "") -> Rollout:
    """The canary at ``weight`` from now on: one fixed step, its checks going on there. The
    evidence for a promote is gathered again at the new weight (a new baseline, no passed
    check yet); failures counted so far are kept."""
    if not movable(rollout):
        raise Refused(f"{rollout.service} is {rollout.phase.value.replace('_', ' ')}: "
                      "cannot move it to another weight")
    if not 0 < weight < 100:
        raise Refused(f"a canary moves to a weight between 1 and 99, not {weight}")
    return _move(rollout, Event.MOVE, now, Phase.PROGRESSING, detail, steps=(weight,),
                 step_index=0, weight=weight, passed_checks=0, baseline=None,
                 next_check_at=now + rollout.interval_s, moved_by=request_id,
                 moved_from=rollout.weight)


def apply(rollout: Rollout, event: Event, now: float, detail: str = "") -> Rollout:
    """The rollout after ``event``; ``Refused`` when the event makes no sense in this phase."""
    if rollout.phase not in _ALLOWED[event]:
        raise Refused(
            f"{rollout.service} is {rollout.phase.value.replace('_', ' ')}: "
            f"cannot {event.value.replace('_', ' ')}"
        )
    if event is Event.MOVE:
        raise Refused(f"{rollout.service}: a move needs its weight (``move``)")
    updated = _apply(rollout, event, now, detail)
    if (event in _CHECKS or event is Event.GATE) and updated.service_wide_since is not None:
        updated = updated.model_copy(update={"service_wide_since": None})  # a check ends it
    return updated


def _apply(rollout: Rollout, event: Event, now: float, detail: str) -> Rollout:
    if event is Event.REGRESSION:
        # Conclusive evidence against the canary: no more checks to wait for.
        return _move(rollout, event, now, Phase.ROLLED_BACK, detail, weight=0,
                     resume_phase=None)
    if event is Event.SERVICE_WIDE:
        # Not the canary's fault, not healthy either: hold (a gated step keeps waiting), and
        # neither count a failure nor clear the ones counted before.
        since = rollout.service_wide_since if rollout.service_wide_since is not None else now
        phase = Phase.AWAITING_APPROVAL if rollout.phase is Phase.AWAITING_APPROVAL \
            else Phase.HOLDING
        return _move(rollout, event, now, phase, detail, service_wide_since=since,
                     holding_since=None, next_check_at=now + rollout.interval_s)
    if event is Event.ROLLBACK or event is Event.ABORT:
        return _move(rollout, event, now, Phase.ROLLED_BACK, detail, weight=0, resume_phase=None)
    if event is Event.PROMOTE:
        if rollout.phase is Phase.PROGRESSING and not _healthy_fixed_canary(rollout):
            raise Refused(f"{rollout.service} has no SLO evidence to promote on yet: a rollout "
                          "is promoted once its last step passed, a canary once a check passed")
        return _move(rollout, event, now, Phase.PROMOTED, detail, weight=100, resume_phase=None)
    if event is Event.PAUSE:
        return _move(rollout, event, now, Phase.PAUSED, detail, resume_phase=rollout.phase)
    if event is Event.RESUME:
        return _move(
            rollout,
            event,
            now,
            Phase.PROGRESSING,
            detail,
            resume_phase=None,
            next_check_at=now + rollout.interval_s,
            holding_since=None,
        )
    if event is Event.GATE:
        return _move(rollout, event, now, Phase.AWAITING_APPROVAL, detail,
                     resume_phase=rollout.phase, passed_checks=rollout.passed_checks + 1,
                     failed_checks=0, holding_since=None,
                     next_check_at=now + rollout.interval_s)
    if rollout.phase is Phase.AWAITING_APPROVAL and event in _CHECKS:
        return _checked_while_gated(rollout, event, now, detail)
    if event is Event.APPROVED and _gated_mid_rollout(rollout):
        index = rollout.step_index + 1
        return _move(rollout, event, now, Phase.PROGRESSING, detail, resume_phase=None,
                     step_index=index, weight=rollout.steps[index], failed_checks=0,
                     holding_since=None, next_check_at=now + rollout.interval_s)
    if event in (Event.REJECTED, Event.EXPIRED) and _gated_mid_rollout(rollout):
        # "Where it was": watched at the current weight, never advancing on its own.
        return _move(rollout, event, now, Phase.PROGRESSING, detail, resume_phase=None,
                     fixed=True)
    if event is Event.APPROVED:
        back = rollout.resume_phase or Phase.PROGRESSING
        return _move(
            rollout,
            event,
            now,
            back,
            detail,
            resume_phase=None,
            next_check_at=now + rollout.interval_s,
        )
    if event is Event.REJECTED or event is Event.EXPIRED:
        if rollout.resume_phase is None:  # a request that never started
            return _move(rollout, event, now, Phase.CANCELLED, detail)
        return _move(rollout, event, now, rollout.resume_phase, detail, resume_phase=None)
    if event is Event.CHECK_FAILED:
        failed = rollout.failed_checks + 1
        if failed >= rollout.failure_threshold:
            return _move(
                rollout, event, now, Phase.ROLLED_BACK, detail, weight=0, failed_checks=failed
            )
        return _move(
            rollout,
            event,
            now,
            Phase.PROGRESSING,
            detail,
            failed_checks=failed,
            holding_since=None,
            next_check_at=now + rollout.interval_s,
        )
    if event is Event.NO_DATA:
        # Both policies hold first; past the deadline the policy decides (the caller alerts).
        since = rollout.holding_since if rollout.holding_since is not None else now
        if rollout.no_data_policy == "rollback" and now - since >= rollout.deadline_s:
            return _move(rollout, event, now, Phase.ROLLED_BACK, detail, weight=0)
        return _move(
            rollout,
            event,
            now,
            Phase.HOLDING,
            detail,
            holding_since=since,
            next_check_at=now + rollout.interval_s,
        )
    # CHECK_PASSED: advance a step, or stop ready to promote after the last one.
    healthy: dict[str, object] = {"passed_checks": rollout.passed_checks + 1,
                                  "failed_checks": 0, "holding_since": None}
    following = now + rollout.interval_s
    if rollout.fixed:
        return _move(rollout, event, now, Phase.PROGRESSING, detail, next_check_at=following,
                     **healthy)
    if rollout.last_step:
        return _move(rollout, event, now, Phase.READY_TO_PROMOTE, detail, **healthy)
    index = rollout.step_index + 1
    return _move(rollout, event, now, Phase.PROGRESSING, detail, step_index=index,
                 weight=rollout.steps[index], next_check_at=following, **healthy)


def start(
    *,
    rollout_id: str,
    service: str,
    namespace: str,
    steps: tuple[int, ...],
    fixed: bool,
    interval_s: float,
    failure_threshold: int,
    no_data_policy: str,
    deadline_s: float,
    requested_by: str,
    channel: str,
    now: float,
) -> Rollout:
    """A new rollout at its first step, progressing."""
    if not steps:
        raise Refused("a rollout needs at least one step")
    return Rollout(
        id=rollout_id,
        service=service,
        namespace=namespace,
        phase=Phase.PROGRESSING,
        steps=steps,
        weight=steps[0],
        fixed=fixed,
        interval_s=interval_s,
        failure_threshold=failure_threshold,
        no_data_policy=no_data_policy,
        deadline_s=deadline_s,
        requested_by=requested_by,
        channel=channel,
        next_check_at=now + interval_s,
        history=(
            Transition(
                at=now,
                event=Event.RESUME,
                before=Phase.PROGRESSING,
                after=Phase.PROGRESSING,
                weight=steps[0],
                detail="started",
            ),
        ),
    )
