"""One analysis tick: every rollout whose check is due, judged with a constant number of queries.

The tick reads the due rollouts from Redis, asks Prometheus once per signal for all of them
(both subsets of each: the canary's and the stable's versions), judges each canary against its
stable (``domain.comparison``: the sequential test on counts since the step began) and against
its service's SLO (the guards), applies the resulting event to the pure state machine inside a
Redis transaction, and only then acts: shift weight, hold, roll back (with a chart), report.

A rollout whose step has no baseline for the comparison yet (it just started, or a step was
taken outside the tick) is read at once, and only its counters are recorded.

Between its checks every watched rollout is *looked at* at every tick: the comparison, an
anytime-valid test, on the counters of the same batched query (one for all of them, due or
not), against the baseline stored with the rollout. A look that is not conclusive writes
nothing; a conclusive one is the REGRESSION transition, committed like any check's, so a severe
regression is rolled back one scrape and one tick after it shows, not at the next check.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

from jobs.adapters.prometheus import MetricsSource
from jobs.adapters.rollout_store import TICK_OWNER
from jobs.domain import comparison as cmp
from jobs.domain.promql import (
    CanaryMetrics,
    CheckResult,
    RawCounts,
    SeriesKey,
    SLOThresholds,
    Verdict,
    evaluate,
)
from jobs.domain.rollout import Event, Phase, Rollout, apply
from jobs.runtime.analysis_actions import act, compared_versions, post_chart
from jobs.runtime.bluegreen_cutover import gated
from jobs.runtime.context import JobContext
from jobs.runtime.reconcile import Unwritable, defer, desired, stop_unwritable
from jobs.runtime.weights import Abandoned
from meshbot import metrics as own_metrics  # not the tick's `metrics` (Prometheus samples)
from meshbot.errors import MeshbotError, MetricsUnavailable
from policies.views import ServiceView
from rendering import common as words
from rendering import traffic as traffic_text

log = logging.getLogger("meshbot.analysis")

EVENTS = {cmp.Decision.PASS: Event.CHECK_PASSED, cmp.Decision.FAIL: Event.CHECK_FAILED,
          cmp.Decision.NO_DATA: Event.NO_DATA, cmp.Decision.REGRESSION: Event.REGRESSION,
          cmp.Decision.SERVICE_WIDE: Event.SERVICE_WIDE}


@dataclass
class TickReport:
    due: int = 0
    looked: int = 0  # watched rollouts whose comparison was looked at between their checks
    queries: int = 0
    events: dict[str, int] = field(default_factory=dict)
    prometheus_error: str | None = None


def thresholds(view: ServiceView) -> SLOThresholds:
    slo = view.slo
    return SLOThresholds(
        success_rate=slo.success_rate, latency_p99_ms=slo.latency_p99_ms,
        latency_p95_ms=slo.latency_p95_ms, min_request_rate=slo.min_request_rate,
        availability=slo.availability, burn_rate_factor=slo.burn_rate.factor,
        burn_windows=tuple(slo.burn_rate.windows),
    )


@dataclass(frozen=True)
class Snapshot:
    """What Prometheus said at one instant about every version under watch."""

    metrics: dict[SeriesKey, CanaryMetrics]
    counts: dict[SeriesKey, RawCounts] | None  # None: no rollout compares with its stable
    # Each rollout's comparison, worked out from ``counts`` while the guards' queries were
    # still on their way (a rollout absent from it is compared when judged).
    looks: dict[str, cmp.Look | None] = field(default_factory=dict)


def fetch(ctx: JobContext, source: MetricsSource, rollouts: list[Rollout],
          checked: list[Rollout] | None = None, at: float | None = None,
          on_counts: Callable[[dict[SeriesKey, RawCounts]], None] | None = None) -> Snapshot:
    """The batched queries for ``rollouts``: the guards' (rate, p99, p95 if asked, error
    ratios) for those ``checked`` (default: all), and the counters of those that compare;
    ``on_counts`` is given the counters as soon as they are there, the guards' answers still
    to come."""
    checked = rollouts if checked is None else checked
    at = time.time() if at is None else at
    calls: list[Callable[[], object]] = []
    if checked:
        watched = sorted({(r.service, r.namespace) for r in checked})
        window = min(r.interval_s for r in checked)
        views = [ctx.policy.service(r.service) for r in checked]
        p95 = any(v is not None and v.slo.latency_p95_ms is not None for v in views)
        # One query still: every service's burn windows, told apart by label in the answer.
        burn_windows = sorted({w for v in views if v is not None
                               for w in v.slo.burn_rate.windows})
        versions = compared_versions(checked)
        # The quantiles of the canaries only: a comparing service's stable is judged slow or
        # not on its counts since the step began; one that does not compare keeps its p99.
        timed = sorted({r.canary_version for r in checked} | {
            r.stable_version for r, v in zip(checked, views, strict=True)
            if v is None or not v.analysis.sequential}) if versions else []
        calls.append(lambda: source.fetch(watched, window, versions, p95=p95,
                                          burn_windows=burn_windows or None, at=at,
                                          quantile_versions=timed))
    comparing = [(r, v) for r in rollouts if (v := ctx.policy.service(r.service)) is not None
                 and v.analysis.sequential]
    if comparing:
        bounds = sorted({b for _, v in comparing for b in cmp.counted_bounds(
            v.slo.latency_p99_ms, v.slo.latency_p95_ms)})
        pairs = sorted({(r.service, r.namespace) for r, _ in comparing})
        compared = compared_versions([r for r, _ in comparing])
        calls.append(lambda: source.counts(pairs, bounds, compared, at))
    if not calls:
        return Snapshot({}, None)
    answers = source.started(calls)  # the guards' queries and the counters at once
    counts = cast(dict[SeriesKey, RawCounts], answers[-1].result()) if comparing else None
    if counts is not None and on_counts is not None:
        on_counts(counts)  # meanwhile Prometheus works on the guards' queries
    metrics = cast(dict[SeriesKey, CanaryMetrics], answers[0].result()) if checked else {}
    return Snapshot(metrics, counts)


@dataclass(frozen=True)
class Judgement:
    """One rollout's check: what it was, what it becomes, and the measurements behind it."""

    view: ServiceView
    before: Rollout
    after: Rollout
    lines: list[str]
    failing: list[str]
    look: cmp.Look | None = None
    excuses: tuple[cmp.Excuse, ...] = ()
    checked: bool = True  # False: only the comparison's baseline was recorded

    @property
    def event(self) -> Event:
        return self.after.history[-1].event


@contextlib.contextmanager
def _collected_after() -> Iterator[None]:
    """No cyclic garbage collection inside the tick: a thousand rollouts and their answers
    are millions of young objects, and full collections in the middle cost more than the
    judging itself. What the tick leaves is collected at its end, once."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@own_metrics.timed_tick  # ticks, their duration, meshbot_last_tick_timestamp
def tick(ctx: JobContext, source: MetricsSource, now: float | None = None) -> TickReport:
    """Read every watched rollout at once, judge the due ones and look at the others'
    comparison, commit every transition in one round trip (skipping any that changed
    meanwhile; a look that concludes nothing is none), then act on the committed ones."""
    with _collected_after():
        return _tick(ctx, source, now)


def _tick(ctx: JobContext, source: MetricsSource, now: float | None) -> TickReport:
    now = time.time() if now is None else now
    report = TickReport()
    # Every watched rollout, due or not: between checks the comparison is looked at too —
    # but not one whose decided weights are not written yet (a writer between its commit and
    # its write, or gone: the reconcile's): its canary's numbers are still the old weight's.
    loaded = ctx.store.get_many(ctx.store.watched())
    unwritten = set(ctx.store.unapplied_since(float("inf")))
    rollouts = [rollout for _, rollout in loaded.values()
                if rollout.phase.watched and rollout.service not in unwritten]
    checked = [r for r in rollouts if r.next_check_at <= now]
    report.due = len(checked)
    report.looked = sum(r.next_check_at > now and not r.needs_baseline for r in rollouts)
    if rollouts:
        before = source.queries_made
        looks: dict[str, cmp.Look | None] = {}

        def compare_all(counts: dict[SeriesKey, RawCounts]) -> None:
            for rollout in rollouts:
                view = ctx.policy.service(rollout.service)
                if view is not None:
                    looks[rollout.service] = _look(view, rollout, counts, now)

        try:
            snapshot = fetch(ctx, source, rollouts, checked, on_counts=compare_all)
            snapshot = Snapshot(snapshot.metrics, snapshot.counts, looks)
        except MetricsUnavailable as exc:
            # Prometheus unreachable is no data for everyone: never healthy.
            report.prometheus_error = exc.message
            snapshot = Snapshot({}, None)
        report.queries = source.queries_made - before
        judged: list[Judgement] = []
        for rollout in rollouts:
            try:
                judgement = judge(ctx, rollout, snapshot, now, report.prometheus_error)
            except MeshbotError as exc:  # one rollout's trouble must not stall the others
                log.error("judging %s failed: %s", rollout.service, exc.message,
                          extra={"rollout_id": rollout.id, "service": rollout.service})
                continue
            if judgement is not None:
                judged.append(judgement)
        moving = [j.before.service for j in judged if _moves_weights(j)]
        for service in moving:  # before the commit: a worker dying after it is finished for
            ctx.store.mark_unapplied(service, now, TICK_OWNER)
        written = ctx.store.commit_many([(loaded[j.before.service][0], j.after) for j in judged])
        for judgement, done in zip(judged, written, strict=True):
            if done and judgement.checked:
                carry_out(ctx, judgement, source)
                report.events[judgement.event.value] = \
                    report.events.get(judgement.event.value, 0) + 1
    ctx.redis.set(ctx.store.keys.last_tick, str(now))
    return report


def tolerances(view: ServiceView, rollout: Rollout) -> cmp.Tolerances:
    analysis = view.analysis
    return cmp.Tolerances(alpha=analysis.alpha, tolerance=analysis.tolerance,
                          floor=analysis.tolerance_floor, steps=len(rollout.steps),
                          bounds_ms=cmp.latency_bounds(view.slo.latency_p99_ms))


def judge(ctx: JobContext, rollout: Rollout, snapshot: Snapshot, now: float,
          prometheus_error: str | None) -> Judgement | None:
    """The rollout's next state from its metrics (pure but for reading the policy)."""
    view = ctx.policy.service(rollout.service)
    if view is None:
        return None
    canary_key = (rollout.service, rollout.namespace, rollout.canary_version)
    stable_key = (rollout.service, rollout.namespace, rollout.stable_version)
    knobs = tolerances(view, rollout)
    if rollout.service in snapshot.looks:
        look = snapshot.looks[rollout.service]
    else:
        look = None if snapshot.counts is None else _look(view, rollout, snapshot.counts, now)
    if rollout.next_check_at > now:  # between checks: a look, or its step's baseline
        if not rollout.needs_baseline:
            return _looked(view, rollout, look, now)
        if look is None and view.analysis.sequential and rollout.stable_version:
            return None  # no counters (Prometheus down): try again at the next tick
        taken = look.baseline if look is not None else cmp.baseline(rollout.step_index, now,
                                                                    None, None)
        return Judgement(view, rollout, rollout.model_copy(update={"baseline": taken}), [], [],
                         look, checked=False)
    excused: list[cmp.Excuse] | None = None
    if prometheus_error is not None:
        result = CheckResult(Verdict.NO_DATA, ())
        lines = failing = [f"Prometheus unreachable: {prometheus_error}"]
        decision = cmp.Decision.NO_DATA
        look = None
    else:
        sample = snapshot.metrics.get(canary_key)
        slo = thresholds(view)
        result = evaluate(sample, slo)
        failing_names = cmp.failing_checks(result)
        if failing_names and sample is not None:
            excused = cmp.excuses(failing_names, sample, snapshot.metrics.get(stable_key),
                                  slo, knobs.tolerance, knobs.floor,
                                  look.since if look is not None else None)
        decision = cmp.decide(result, look, excused)
        lines = result.lines + comparison_lines(look)
        failing = [c.text for c in result.checks if c.verdict is not Verdict.PASS]
        if decision is cmp.Decision.REGRESSION and look is not None:  # conclusive, then guards
            failing = [line for line in comparison_lines(look)
                       if any(line.startswith(t) for t in look.conclusive)] + \
                [c.text for c in result.checks if c.verdict is Verdict.FAIL]
    event = _event(view, rollout, decision)
    moved = gated(apply(rollout, event, now, "; ".join(lines)), now)
    kept = rollout.baseline if look is None else look.baseline
    if moved.step_index != rollout.step_index:  # a new step: its counters start here
        counts = snapshot.counts
        kept = None if counts is None else cmp.baseline(
            moved.step_index, now, counts.get(canary_key), counts.get(stable_key))
    after = moved.model_copy(update={"last_values": tuple(lines), "baseline": kept})
    return Judgement(view, rollout, after, lines, failing, look, tuple(excused or ()))


def _look(view: ServiceView, rollout: Rollout, counts: dict[SeriesKey, RawCounts],
          now: float) -> cmp.Look | None:
    """The rollout's comparison with its stable on ``counts`` (None: it does not compare)."""
    if not (view.analysis.sequential and rollout.stable_version):
        return None
    canary = counts.get((rollout.service, rollout.namespace, rollout.canary_version))
    stable = counts.get((rollout.service, rollout.namespace, rollout.stable_version))
    knobs = tolerances(view, rollout)
    # A look between checks that cannot conclude is not worth the full computation.
    if rollout.next_check_at > now and not rollout.needs_baseline and not cmp.may_conclude(
            rollout.baseline, rollout.step_index, canary, stable, knobs):
        return None
    return cmp.look(rollout.baseline, rollout.step_index, now, canary, stable, knobs)


def _looked(view: ServiceView, rollout: Rollout, look: cmp.Look | None,
            now: float) -> Judgement | None:
    """A look at the comparison between two checks: nothing to write unless it is conclusive
    (the e-values are anytime-valid, so looking changes neither their alpha nor the next
    check's); conclusive, the rollout rolls back now, as a check would have at that moment."""
    if look is None or not look.conclusive:
        return None
    compared = comparison_lines(look)
    failing = [line for line in compared if any(line.startswith(t) for t in look.conclusive)]
    moved = apply(rollout, Event.REGRESSION, now, "; ".join(compared))
    after = moved.model_copy(update={"last_values": tuple(compared), "baseline": look.baseline})
    return Judgement(view, rollout, after, compared, failing, look)


def comparison_lines(look: cmp.Look | None) -> list[str]:
    """What the thread says the canary was compared on."""
    if look is None:
        return []
    if look.errors is None or (look.note and look.errors.reason):
        return [traffic_text.comparison_note(look.note or "no counts")]
    errors = look.errors
    lines = [traffic_text.comparison_line(
        "errors", (errors.canary.events, errors.canary.requests),
        (errors.stable.events, errors.stable.requests), look.log_e_errors, look.threshold)]
    if look.latency is not None and look.latency.bounds:
        worst = max(look.latency.bounds, key=lambda b: b.log_e)
        lines.append(traffic_text.comparison_line(
            "latency", (worst.canary.events, worst.canary.requests),
            (worst.stable.events, worst.stable.requests), look.log_e_latency, look.threshold,
            worst.bound_ms))
    return lines


def _moves_weights(judgement: Judgement) -> bool:
    return judgement.after.weight != judgement.before.weight \
        or judgement.after.phase is Phase.ROLLED_BACK


def carry_out(ctx: JobContext, judgement: Judgement,
              source: MetricsSource | None = None) -> None:
    rollout, updated = judgement.before, judgement.after
    extra = {"rollout_id": rollout.id, "service": rollout.service}
    log.info("%s: %s → %s (%s)", rollout.service, judgement.event.value, updated.phase.value,
             "; ".join(judgement.lines), extra=extra)
    try:
        act(ctx, judgement.view, rollout, updated, judgement.event, judgement.lines,
            judgement.failing, judgement)
        if _moves_weights(judgement):
            ctx.store.mark_applied(rollout.service, TICK_OWNER)
    except Unwritable as exc:  # refused for good: stopped where the mesh is, said once
        rolling_back = updated.phase is Phase.ROLLED_BACK
        target = desired(updated)
        log.error("%s: %s could not be written: %s", rollout.service, target, exc.error.message,
                  extra=extra)
        shown = words.weights(target.stable, target.canary, updated.stable_subset,
                              updated.canary_subset)
        stop_unwritable(
            ctx, judgement.view, updated, exc.error, target=target, owner=TICK_OWNER,
            now=updated.history[-1].at, action="rollback" if rolling_back else "advance",
            request_id=f"tick:{rollout.id}:{len(updated.history)}", back_to=rollout,
            decided_words=f"the automatic rollback to {shown}" if rolling_back else
            f"step {updated.step_index + 1} of {len(updated.steps)} ({shown})")
        return
    except Abandoned as exc:  # a command took the rollout over meanwhile: its write wins
        log.info("acting on %s for %s: overtaken (%s)", judgement.event.value,
                 rollout.service, exc.message, extra=extra)
        return
    except MeshbotError as exc:  # the reconcile writes it, once any wait asked for is over
        log.warning("acting on %s for %s failed: %s", judgement.event.value, rollout.service,
                    exc.message, extra=extra)
        if _moves_weights(judgement):
            defer(ctx, rollout.service, TICK_OWNER, exc, updated.history[-1].at)
        return
    if updated.phase is Phase.ROLLED_BACK and judgement.event is not Event.NO_DATA \
            and source is not None:
        post_chart(ctx, source, judgement)


def _event(view: ServiceView, rollout: Rollout, decision: cmp.Decision) -> Event:
    """The decision as an event; a passed check whose next step crosses the tier's
    ``canary_above`` asks for approval instead of advancing; its checks go on meanwhile."""
    event = EVENTS[decision]
    if (event is Event.CHECK_PASSED and rollout.phase in (Phase.PROGRESSING, Phase.HOLDING)
            and not rollout.fixed and not rollout.last_step
            and view.approvals_for_weight(rollout.steps[rollout.step_index + 1]) > 0):
        return Event.GATE
    return event
