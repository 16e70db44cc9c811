"""What a judged rollout's transition means, carried out: weights written, the thread told,
alerts posted, the audit written, the status message updated, the rollback chart uploaded.
``jobs.runtime.analysis`` decides; this module acts.
"""


from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from jobs.adapters.audit import AuditEntry
from jobs.adapters.prometheus import MetricsSource
from jobs.domain.promql import (
    chart_query,
    parse_matrix,
    rate_window,
)
from jobs.domain.rollout import Event, Phase, Rollout
from jobs.domain.routes import Weights
from jobs.runtime.bluegreen_cutover import ask as ask_cutover
from jobs.runtime.bluegreen_cutover import void as void_cutover
from jobs.runtime.context import JobContext
from jobs.runtime.handlers.approvals import request_approval_from_tick
from jobs.runtime.handlers.traffic import apply_weight
from jobs.runtime.reconcile import Unwritable
from jobs.runtime.reports import announce, report
from jobs.runtime.route_edits import back_to_stable
from meshbot import metrics as own_metrics  # not the tick's `metrics` (Prometheus samples)
from meshbot.commands import Command, Request, Verb
from meshbot.errors import MeshbotError, PermanentError, TemporaryError
from policies.views import ServiceView
from rendering import routing as routing_text
from rendering import traffic as traffic_text
from rendering.charts import RollbackChart, rollback_png

if TYPE_CHECKING:
    from jobs.runtime.analysis import Judgement

log = logging.getLogger("meshbot.analysis")


def compared_versions(rollouts: list[Rollout]) -> list[str]:
    """The versions compared (each rollout's canary and stable); none (every version) when a
    rollout does not know one of its own."""
    if any(not (r.canary_version and r.stable_version) for r in rollouts):
        return []
    return sorted({v for r in rollouts for v in (r.canary_version, r.stable_version)})


def act(ctx: JobContext, view: ServiceView, before: Rollout, after: Rollout, event: Event,
        lines: list[str], failing: list[str], judgement: Judgement | None = None) -> None:
    """Carry out what the transition means, and say so in the rollout's thread. A weight write
    the Kubernetes API refuses for good raises ``Unwritable`` (nothing said yet)."""
    say = _thread_writer(ctx, after)
    if after.phase is Phase.ROLLED_BACK:
        try:
            was, now_at, _ = back_to_stable(ctx, view, after.subsets)
        except PermanentError as exc:  # the caller stops the rollout where the mesh is
            raise Unwritable(exc) from exc
        own_metrics.rollback("automatic")
        if event is Event.REGRESSION and judgement is not None and judgement.look is not None:
            reason = traffic_text.regression_rollback(view.name, judgement.look.conclusive,
                                                      failing)
        else:
            reason = traffic_text.automatic_rollback(view.name, failing, after.failed_checks,
                                                     event is Event.NO_DATA)
        say(reason)
        _audit(ctx, after, "rollback", was, now_at, reason)
        void_cutover(ctx, after, "an automatic rollback")
        channel = view.channel or after.channel
        if channel:
            announce(ctx, channel, traffic_text.rollback_alert(view.name, reason),
                     key=f"alert:{after.id}:rollback")
    elif event is Event.SERVICE_WIDE:
        numbers = [traffic_text.service_wide_numbers(e.check, e.canary, e.stable, e.threshold,
                                                     e.unit)
                   for e in (judgement.excuses if judgement is not None else ())]
        if before.service_wide_since is None:
            say(traffic_text.service_wide_hold(view.name, numbers))
        channel = view.channel or after.channel
        if channel and _first_alert(ctx, after, "service-wide"):
            announce(ctx, channel, traffic_text.service_wide_alert(view.name, numbers),
                     key=f"alert:{after.id}:service-wide")
    elif event is Event.GATE and after.bluegreen:
        say(routing_text.bluegreen_ready(view.name, (after.stable_subset, after.canary_subset),
                                         view.approvals.promote, lines))
        ask_cutover(ctx, view, after)
    elif event is Event.GATE:
        say(traffic_text.step_needs_approval(after.steps[after.step_index + 1], lines))
        request_approval_from_tick(ctx, gate_request(ctx, view, after))
    elif after.weight != before.weight:
        try:
            was, now_at = apply_weight(ctx, view, after, Weights.canary_at(after.weight))
        except PermanentError as exc:
            raise Unwritable(exc) from exc
        text = traffic_text.step_advanced(after.step_index, len(after.steps), after.weight, lines)
        say(text)
        _audit(ctx, after, "advance", was, now_at, text)
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
            announce(ctx, channel, text, key=f"alert:{after.id}:hold")
    elif event is Event.CHECK_FAILED:
        say(traffic_text.check_failed(after.failed_checks, after.failure_threshold, failing))
    _update_status(ctx, before, after)


def _audit(ctx: JobContext, rollout: Rollout, action: str, before: Weights, after: Weights,
           detail: str) -> None:
    """The analysis's own changes of the mesh are audited like anyone's: by meshbot."""
    ctx.audit.record(AuditEntry(
        actor="meshbot", action=action, target=rollout.service, outcome="done",
        request_id=f"tick:{rollout.id}:{len(rollout.history)}", before=str(before),
        after=str(after), detail=detail))


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


def _first_alert(ctx: JobContext, rollout: Rollout, kind: str = "hold") -> bool:
    return bool(ctx.redis.set(f"meshbot:{kind}-alert:{rollout.id}", "1", nx=True, ex=86400))


def _thread_writer(ctx: JobContext, rollout: Rollout) -> Callable[[str], None]:
    def say(text: str) -> None:
        if rollout.channel and rollout.thread_ts:
            report(ctx, rollout.channel, rollout.thread_ts, text)  # owed if Slack is away
    return say


def _state(rollout: Rollout) -> tuple[object, ...]:
    return (rollout.phase, rollout.step_index, rollout.weight, rollout.failed_checks,
            rollout.holding_since is None, rollout.service_wide_since is None)


def _update_status(ctx: JobContext, before: Rollout, rollout: Rollout) -> None:
    # Only on a change of state, not of the measurements: watching a thousand steady rollouts
    # must not spend Slack's chat.update budget (the values are in the milestone replies).
    if _state(before) == _state(rollout):
        return
    if rollout.channel and rollout.status_ts:
        try:
            ctx.notifier.update(rollout.channel, rollout.status_ts,
                                "\n".join([rollout.title, *traffic_text.rollout_lines(rollout)]))
        except TemporaryError as exc:  # held by the notifier: a later tick shows it
            log.warning("%s: the status message waits for Slack (%s)", rollout.service,
                        exc.message)


CHART_POINTS = 240  # at most this many points per line, whatever the step's length


def post_chart(ctx: JobContext, source: MetricsSource, judgement: Judgement) -> None:
    """After an automatic rollback: canary vs stable over the step, from one range query, as
    a PNG in the rollout's thread. Never in the way of the rollback itself (done by now)."""
    rollout, view = judgement.after, judgement.view
    if not (rollout.channel and rollout.thread_ts):
        return
    end = rollout.history[-1].at
    began = rollout.baseline.at if rollout.baseline is not None else _step_start(rollout)
    start = min(began, end - 10 * source.scrape_interval)  # a short step: some time before
    step = max(source.scrape_interval, (end - start) / CHART_POINTS)
    window = rate_window(0, source.scrape_interval)
    roles = {rollout.canary_version: "canary", rollout.stable_version: "stable"}
    extra = {"rollout_id": rollout.id, "service": rollout.service}
    try:
        answer = parse_matrix(source.query_range(
            chart_query([(rollout.service, rollout.namespace)], window,
                        compared_versions([rollout])), start - window, end + source.scrape_interval,
            step))
        series: dict[str, dict[str, list[tuple[float, float]]]] = {"errors": {}, "p99": {}}
        for (signal, key), points in answer.items():
            role = roles.get(key[2])
            if key[:2] == (rollout.service, rollout.namespace) and role and signal in series:
                series[signal][role] = points
        chart = RollbackChart(
            service=view.name, start=began, detected_at=end, error_rates=series["errors"],
            p99_ms=series["p99"], verdict=_shorten(_chart_verdict(judgement), 120),
            slo_error_rate=100 - view.slo.success_rate, slo_p99_ms=view.slo.latency_p99_ms)
        png = rollback_png(chart)
        ctx.notifier.upload(rollout.channel, rollout.thread_ts, f"{view.name}-rollback.png",
                            png, title=f"{view.name}: canary vs stable",
                            comment=traffic_text.chart_comment(view.name),
                            alt_text=f"{view.name}: canary and stable error rate and p99 over "
                            "the step, the rollback marked")
    except MeshbotError as exc:
        log.warning("the rollback chart of %s was not posted: %s", rollout.service,
                    exc.message, extra=extra)
    except Exception:  # drawing must never take the tick down
        log.exception("the rollback chart of %s could not be drawn", rollout.service,
                      extra=extra)


def _chart_verdict(judgement: Judgement) -> str:
    look = judgement.look
    if judgement.event is not Event.REGRESSION or look is None or look.errors is None:
        return "; ".join(judgement.failing[:2])
    if "errors" in look.conclusive:
        e = look.errors
        return traffic_text.chart_verdict("5xx", (e.canary.events, e.canary.requests),
                                          (e.stable.events, e.stable.requests),
                                          look.log_e_errors, look.threshold)
    assert look.latency is not None
    worst = max(look.latency.bounds, key=lambda b: b.log_e)
    return traffic_text.chart_verdict(f"slower than {worst.bound_ms:g} ms",
                                      (worst.canary.events, worst.canary.requests),
                                      (worst.stable.events, worst.stable.requests),
                                      look.log_e_latency, look.threshold)


def _step_start(rollout: Rollout) -> float:
    for transition in reversed(rollout.history[:-1]):
        if transition.weight != rollout.history[-1].weight or transition.detail == "started":
            return transition.at
    return rollout.history[0].at


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
