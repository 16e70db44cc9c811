"""One analysis tick: every rollout whose check is due, judged with a constant number of queries.

The tick reads the due rollouts from Redis, asks Prometheus once per signal for all of them,
judges each canary against its service's SLO, applies the resulting event to the pure state
machine inside a Redis transaction, and only then acts: shift weight, roll back, report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from jobs.adapters.prometheus import MetricsSource
from jobs.domain.promql import CanaryMetrics, CheckResult, SLOThresholds, Verdict, evaluate
from jobs.domain.rollout import Event, Phase, Rollout, apply
from jobs.domain.routes import Weights
from jobs.runtime.context import JobContext
from jobs.runtime.handlers.approvals import request_approval
from jobs.runtime.handlers.traffic import apply_weight
from jobs.runtime.route_edits import back_to_stable
from meshbot import metrics as own_metrics  # not the tick's `metrics` (Prometheus samples)
from meshbot.commands import Command, Request, Verb
from meshbot.errors import MeshbotError, MetricsUnavailable
from policies.views import ServiceView
from rendering import traffic as traffic_text

log = logging.getLogger("meshbot.analysis")

EVENTS = {Verdict.PASS: Event.CHECK_PASSED, Verdict.FAIL: Event.CHECK_FAILED,
          Verdict.NO_DATA: Event.NO_DATA}


@dataclass
class TickReport:
    due: int = 0
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


def fetch(ctx: JobContext, source: MetricsSource,
          rollouts: list[Rollout]) -> dict[tuple[str, str, str], CanaryMetrics]:
    watched = sorted({(r.service, r.namespace) for r in rollouts})
    window = min(r.interval_s for r in rollouts)
    versions = sorted({r.canary_version for r in rollouts if r.canary_version})
    views = [ctx.policy.service(r.service) for r in rollouts]
    p95 = any(v is not None and v.slo.latency_p95_ms is not None for v in views)
    # One query still: every service's burn windows, told apart by label in the answer.
    burn_windows = sorted({w for v in views if v is not None for w in v.slo.burn_rate.windows})
    return source.fetch(watched, window, versions, p95=p95, burn_windows=burn_windows or None)


@dataclass(frozen=True)
class Judgement:
    """One rollout's check: what it was, what it becomes, and the measurements behind it."""

    view: ServiceView
    before: Rollout
    after: Rollout
    lines: list[str]
    failing: list[str]

    @property
    def event(self) -> Event:
        return self.after.history[-1].event


@own_metrics.timed_tick  # ticks, their duration, meshbot_last_tick_timestamp
def tick(ctx: JobContext, source: MetricsSource, now: float | None = None) -> TickReport:
    """Read every due rollout at once, judge them all, commit every transition in one round
    trip (skipping any that changed meanwhile), then act on the committed ones."""
    now = time.time() if now is None else now
    report = TickReport()
    loaded = ctx.store.get_many(ctx.store.due(now))
    rollouts = [rollout for _, rollout in loaded.values() if rollout.phase.watched]
    report.due = len(rollouts)
    if rollouts:
        before = source.queries_made
        try:
            metrics = fetch(ctx, source, rollouts)
        except MetricsUnavailable as exc:
            # Prometheus unreachable is no data for everyone: never healthy.
            report.prometheus_error = exc.message
            metrics = {}
        report.queries = source.queries_made - before
        judged: list[Judgement] = []
        for rollout in rollouts:
            try:
                judgement = judge(ctx, rollout, metrics, now, report.prometheus_error)
            except MeshbotError as exc:  # one rollout's trouble must not stall the others
                log.error("judging %s failed: %s", rollout.service, exc.message,
                          extra={"rollout_id": rollout.id, "service": rollout.service})
                continue
            if judgement is not None:
                judged.append(judgement)
        moving = [j.before.service for j in judged if _moves_weights(j)]
        for service in moving:  # before the commit: a worker dying after it is finished for
            ctx.store.mark_unapplied(service, now)
        written = ctx.store.commit_many([(loaded[j.before.service][0], j.after) for j in judged])
        for judgement, done in zip(judged, written, strict=True):
            if done:
                carry_out(ctx, judgement)
                report.events[judgement.event.value] = \
                    report.events.get(judgement.event.value, 0) + 1
    ctx.redis.set(ctx.store.keys.last_tick, str(now))
    return report


def judge(ctx: JobContext, rollout: Rollout,
          metrics: dict[tuple[str, str, str], CanaryMetrics], now: float,
          prometheus_error: str | None) -> Judgement | None:
    """The rollout's next state from its metrics (pure but for reading the policy)."""
    view = ctx.policy.service(rollout.service)
    if view is None:
        return None
    if prometheus_error is not None:
        result = CheckResult(Verdict.NO_DATA, ())
        lines = failing = [f"Prometheus unreachable: {prometheus_error}"]
    else:
        sample = metrics.get((rollout.service, rollout.namespace, rollout.canary_version))
        result = evaluate(sample, thresholds(view))
        lines = result.lines
        failing = [c.text for c in result.checks if c.verdict is not Verdict.PASS]
    moved = apply(rollout, _event(view, rollout, result.verdict), now, "; ".join(lines))
    after = moved.model_copy(update={"last_values": tuple(lines)})
    return Judgement(view, rollout, after, lines, failing)


def _moves_weights(judgement: Judgement) -> bool:
    return judgement.after.weight != judgement.before.weight \
        or judgement.after.phase is Phase.ROLLED_BACK


def carry_out(ctx: JobContext, judgement: Judgement) -> None:
    rollout, updated = judgement.before, judgement.after
    extra = {"rollout_id": rollout.id, "service": rollout.service}
    log.info("%s: %s → %s (%s)", rollout.service, judgement.event.value, updated.phase.value,
             "; ".join(judgement.lines), extra=extra)
    try:
        act(ctx, judgement.view, rollout, updated, judgement.event, judgement.lines,
            judgement.failing)
        if _moves_weights(judgement):
            ctx.store.mark_applied(rollout.service)
    except MeshbotError as exc:
        log.warning("acting on %s for %s failed: %s", judgement.event.value, rollout.service,
                    exc.message, extra=extra)


def _event(view: ServiceView, rollout: Rollout, verdict: Verdict) -> Event:
    """The verdict as an event; a passed check whose next step crosses the tier's
    ``canary_above`` asks for approval instead of advancing; its checks go on meanwhile."""
    event = EVENTS[verdict]
    if (event is Event.CHECK_PASSED and rollout.phase in (Phase.PROGRESSING, Phase.HOLDING)
            and not rollout.fixed and not rollout.last_step
            and view.approvals_for_weight(rollout.steps[rollout.step_index + 1]) > 0):
        return Event.GATE
    return event


def act(ctx: JobContext, view: ServiceView, before: Rollout, after: Rollout, event: Event,
        lines: list[str], failing: list[str]) -> None:
    """Carry out what the transition means, and say so in the rollout's thread."""
    say = _thread_writer(ctx, after)
    if after.phase is Phase.ROLLED_BACK:
        back_to_stable(ctx, view, after.subsets)
        own_metrics.rollback("automatic")
        reason = traffic_text.automatic_rollback(view.name, failing, after.failed_checks,
                                             event is Event.NO_DATA)
        say(reason)
        channel = view.channel or after.channel
        if channel:
            ctx.notifier.post_root(channel, traffic_text.rollback_alert(view.name, reason))
    elif event is Event.GATE:
        say(traffic_text.step_needs_approval(after.steps[after.step_index + 1], lines))
        request_approval(ctx, gate_request(ctx, view, after))
    elif after.weight != before.weight:
        apply_weight(ctx, view, after, Weights.canary_at(after.weight))
        say(traffic_text.step_advanced(after.step_index, len(after.steps), after.weight, lines))
    elif after.phase is Phase.READY_TO_PROMOTE:
        say(traffic_text.ready_to_promote(view.name, lines))
    elif after.phase is Phase.HOLDING and before.phase is not Phase.HOLDING:
        say(traffic_text.holding(failing, after.no_data_policy, after.deadline_s))
    elif after.phase is Phase.HOLDING and _past_deadline(after) and _first_alert(ctx, after):
        # no_data: hold keeps holding past the deadline, but people must hear about it once.
        text = traffic_text.holding_too_long(view.name, after.deadline_s, failing)
        say(text)
        channel = view.channel or after.channel
        if channel:
            ctx.notifier.post_root(channel, text)
    elif event is Event.CHECK_FAILED:
        say(traffic_text.check_failed(after.failed_checks, after.failure_threshold, failing))
    _update_status(ctx, before, after)


def gate_request(ctx: JobContext, view: ServiceView, rollout: Rollout) -> Request:
    """The approval request for a rollout's next step, on behalf of who started the rollout;
    once approved, ``/mesh resume`` takes the step."""
    following = rollout.steps[rollout.step_index + 1]
    approvers = tuple(m for m in ctx.policy.members(ctx.policy.approve)
                      if m != rollout.requested_by)
    return Request(
        id=f"{rollout.id}-step-{rollout.step_index + 1}",
        command=Command(verb=Verb.RESUME, target=view.name, percent=following),
        user=rollout.requested_by, channel=rollout.channel, received_at=time.time(),
        approvals_required=view.approvals_for_weight(following),
        eligible_approvers=approvers,
    )


def _past_deadline(rollout: Rollout) -> bool:
    since = rollout.holding_since
    return since is not None and rollout.history[-1].at - since >= rollout.deadline_s


def _first_alert(ctx: JobContext, rollout: Rollout) -> bool:
    return bool(ctx.redis.set(f"meshbot:hold-alert:{rollout.id}", "1", nx=True, ex=86400))


def _thread_writer(ctx: JobContext, rollout: Rollout) -> Callable[[str], None]:
    def say(text: str) -> None:
        if rollout.channel and rollout.thread_ts:
            ctx.notifier.reply(rollout.channel, rollout.thread_ts, text)
    return say


def _state(rollout: Rollout) -> tuple[object, ...]:
    return (rollout.phase, rollout.step_index, rollout.weight, rollout.failed_checks,
            rollout.holding_since is None)


def _update_status(ctx: JobContext, before: Rollout, rollout: Rollout) -> None:
    # Only on a change of state, not of the measurements: watching a thousand steady rollouts
    # must not spend Slack's chat.update budget (the values are in the milestone replies).
    if _state(before) == _state(rollout):
        return
    if rollout.channel and rollout.status_ts:
        ctx.notifier.update(rollout.channel, rollout.status_ts,
                            "\n".join([rollout.title, *traffic_text.rollout_lines(rollout)]))
