"""``/mesh canary``: start a canary at a fixed weight, or move a running one to another.

A running canary (a rollout of one fixed step) moves to the new weight: the same rollout and
thread, its checks going on at the new weight from a new baseline; a weight of 100 is a promote.
A rollout that cannot move (stepped, paused, waiting for approval) is refused. The same checks
(``precheck_canary``, ``precheck_promote``) run before approvers are asked
(``approval_plan.compose``), so nobody approves what would then be refused.
"""

from __future__ import annotations

import time

from jobs.domain import rollout as machine
from jobs.domain.rollout import Phase, Rollout
from jobs.domain.routes import Weights
from jobs.runtime.context import JobContext
from jobs.runtime.handlers import traffic
from jobs.runtime.handlers.common import names, pair, plans, record, service_view, show_plan
from jobs.runtime.weights import Abandoned
from meshbot.commands import Request
from meshbot.errors import Refused
from policies.views import ServiceView
from rendering import canary as canary_text
from rendering import plan as plan_text


def running(ctx: JobContext, view: ServiceView) -> Rollout | None:
    current = ctx.store.get(view.name)
    return None if current is None or current.phase.terminal else current


def precheck_canary(ctx: JobContext, view: ServiceView, percent: int,
                    request_id: str = "") -> Rollout | None:
    """The running canary this request moves (None: it starts one); ``Refused`` when a rollout
    is in the way, the canary is at that weight already, or (at 100) it cannot be promoted."""
    current = running(ctx, view)
    if current is None or current.id == request_id:
        return None
    if not machine.movable(current):
        raise Refused(canary_text.rollout_in_the_way(view.name, current.phase,
                                                     current.requested_by))
    if percent >= 100:
        precheck_promote(ctx, view)
    elif percent <= 0:
        raise Refused(canary_text.move_to_zero(view.name))
    elif percent == current.weight:
        raise Refused(canary_text.already_at(view.name, percent))
    return current


def precheck_promote(ctx: JobContext, view: ServiceView) -> Rollout:
    """The rollout a promote would promote; ``Refused`` when there is none, or it has no SLO
    evidence to be promoted on yet."""
    current = running(ctx, view)
    if current is None:
        raise Refused(canary_text.no_rollout_to_promote(view.name))
    if not machine.promotable(current):
        raise Refused(canary_text.no_evidence_yet(view.name, current.phase,
                                                  current.next_check_at))
    return current


@plans
def canary(ctx: JobContext, request: Request) -> str:
    view = service_view(ctx, request)
    percent = request.command.percent or 0
    current = running(ctx, view)
    if current is not None and current.moved_by == request.id:
        return _move(ctx, request, view, current)  # a retry of this move: re-apply it
    done = ctx.store.get(view.name)
    if done is not None and done.phase is Phase.PROMOTED and done.moved_by == request.id \
            and percent >= 100:
        return traffic.promote(ctx, request)  # a retry of this promote: it writes it again
    if done is not None and done.phase.terminal and done.moved_by == request.id:
        # A retry of this request after it promoted (or a rollback ended it): never re-apply.
        raise Abandoned(canary_text.changed_while_moving(view.name))
    current = precheck_canary(ctx, view, percent, request.id)
    if current is None:
        return traffic.canary(ctx, request)
    if request.command.dry_run and percent >= 100:
        return traffic.promote(ctx, request)  # its own plan, and nothing stored
    if request.command.dry_run:
        would = machine.move(current, percent, time.time(), request.id, "dry run")
        return show_plan(ctx, request, traffic.plan_weights(
            ctx, view, would.subsets, Weights.canary_at(would.weight),
            (plan_text.canary_moved(view.name, current.weight, would.weight),)))
    if percent >= 100:  # a canary at 100 is a promote
        ctx.store.update(view.name, lambda cur: cur.model_copy(update={"moved_by": request.id})
                         if cur is not None and cur.id == current.id else None)
        return traffic.promote(ctx, request)
    now = time.time()
    ctx.store.mark_unapplied(view.name, now, traffic.writer())

    def move(cur: Rollout | None) -> Rollout | None:
        if cur is None or cur.id != current.id or not machine.movable(cur):
            return None
        traffic.not_overtaken(ctx, request, cur.channel, cur.thread_ts)  # one transaction
        return machine.move(cur, percent, now, request.id, f"by <@{request.user}>")

    with traffic.refused_before_commit(ctx, view.name):
        moved = ctx.store.update(view.name, move, watch=traffic.COMMIT_WATCH)
        if moved is None or moved.moved_by != request.id:
            raise Refused(canary_text.changed_while_moving(view.name))
    return _move(ctx, request, view, moved)


def _move(ctx: JobContext, request: Request, view: ServiceView, moved: Rollout) -> str:
    """Write the moved canary's weight (its state says it already) and say so in its thread."""
    before, after = traffic.apply_weight(ctx, view, moved, Weights.canary_at(moved.weight))
    traffic.undo_if_overtaken(ctx, request, view, moved, moved.channel, moved.thread_ts)
    ctx.store.mark_applied(view.name, traffic.writer())
    was = moved.moved_from if moved.moved_from is not None else before.canary
    if moved.channel and moved.thread_ts:
        ctx.notifier.reply(moved.channel, moved.thread_ts, canary_text.canary_moved(
            was, moved.weight, pair(before), pair(after), names(moved.subsets), request.user,
            request.approved_by))
    record(ctx, request, "done", before=before, after=after, channel=moved.channel,
           ts=moved.thread_ts, detail=canary_text.move_detail(was, moved.weight))
    return f"{view.name}: {after}"
