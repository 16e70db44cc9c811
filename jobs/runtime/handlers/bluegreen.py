"""/mesh bluegreen: the runbook's cutover, to the end, from one command.

The start writes the preview header route (``canary: true`` → the other subset) and 90/10 as a
one-step rollout under analysis. When the step passes, the analysis asks for the cutover itself
(``jobs.runtime.bluegreen_cutover``): the request, with the tier's promote approvals, is posted
in the rollout's thread, and once approved it comes back here as the cutover: all traffic to
the other subset, then the preview route removed. A breach at any point rolls back (weights to
the stable subset, the preview route removed) and closes an open cutover request.
"""

from __future__ import annotations

import time
from typing import Any

from jobs.domain import rollout as machine
from jobs.domain.rollout import Event, Phase, Rollout
from jobs.domain.routes import Route, Subsets, Weights, plan_weights
from jobs.domain.routes_match import HeaderMatch, plan_header_route, plan_header_route_off
from jobs.runtime import bluegreen_cutover
from jobs.runtime.bluegreen_cutover import CUTOVER, next_attempt, waiting_for_cutover
from jobs.runtime.context import JobContext
from jobs.runtime.handlers import traffic
from jobs.runtime.handlers.common import (
    names,
    plans,
    record,
    request_thread,
    service_view,
    show_plan,
    subsets_of,
)
from jobs.runtime.route_edits import Planner, read_and_plan
from jobs.runtime.weights import defined_subsets, preflight, qualified
from meshbot.commands import Request
from meshbot.errors import Refused
from meshbot.plan import ObjectChange, Plan
from policies.decide import BLUEGREEN_STEP
from policies.views import ServiceView
from rendering import common as words
from rendering import routing as routing_text

# The runbook's preview header for a blue-green cutover.
PREVIEW = HeaderMatch("canary", "true")


def is_cutover(request: Request) -> bool:
    """The request meshbot submits once the step passed (the caller's command is the start)."""
    return CUTOVER in request.command.options


def precheck(ctx: JobContext, view: ServiceView, request: Request) -> Rollout | None:
    """What either half refuses before approvers are asked, in its own words: the rollout a
    cutover request cuts over (None for the start)."""
    current = ctx.store.get(view.name)
    if is_cutover(request):
        wanted = request.command.options[CUTOVER]
        if current is None or current.id != wanted or not waiting_for_cutover(current):
            phase = current.phase.value if current is not None and current.id == wanted \
                else "replaced"
            raise Refused(routing_text.bluegreen_cutover_gone(view.name, phase))
        return current
    if current is not None and not current.phase.terminal and current.id != request.id:
        if next_attempt(ctx, current) is not None:
            return None  # its cutover was not approved: this asks for it again
        if current.bluegreen:
            raise Refused(routing_text.bluegreen_running(view.name, current.requested_by,
                                                         current.phase.value))
        raise Refused(routing_text.bluegreen_busy(view.name, current.phase.value))
    return None


@plans
def bluegreen(ctx: JobContext, request: Request) -> str:
    view = service_view(ctx, request)
    if is_cutover(request):
        return _cutover(ctx, request, view)
    return _start(ctx, request, view)


def _preview(view: ServiceView, subsets: Subsets) -> Planner:
    def preview(vs: dict[str, Any]) -> list[Route] | None:
        return plan_header_route(vs, view.name, view.namespace, PREVIEW, subsets.canary)
    return preview


def _split(ctx: JobContext, view: ServiceView, subsets: Subsets, target: Weights) -> Planner:
    """The split as ``set_weights`` plans it on the object it reads."""
    known = defined_subsets(ctx.kube, view.namespace, view.name)

    def split(vs: dict[str, Any]) -> list[Route] | None:
        planned = plan_weights(vs, view.name, view.namespace, target, defined_subsets=known,
                               subsets=subsets)
        return planned.http if planned.changes_anything else None
    return split


def _start(ctx: JobContext, request: Request, view: ServiceView) -> str:
    precheck(ctx, view, request)
    current = ctx.store.get(view.name)
    attempt = next_attempt(ctx, current) if current is not None else None
    if current is not None and attempt is not None:
        return _ask_again(ctx, request, view, current, attempt)
    subsets = subsets_of(ctx, view)
    target = Weights.canary_at(BLUEGREEN_STEP)
    # Every check the 90/10 step makes (GitOps owner, managed route, ready green pods), before
    # the preview route is written: a refusal changes nothing.
    preflight(ctx.kube, view.namespace, view.virtual_services, view.name, subsets, target,
              allow_gitops=view.gitops_allowed)
    preview = _preview(view, subsets)
    if request.command.dry_run:
        return show_plan(ctx, request, start_plan(ctx, view, subsets,
                                                  request.command.interval_s))
    planned = read_and_plan(ctx, view, preview)
    approvals = view.approvals.promote
    title = routing_text.bluegreen_root(view.name, view.namespace, request.user, PREVIEW,
                                        names(subsets), approvals)
    ts = request_thread(ctx, request, request.channel, title)
    traffic.write_routes(ctx, request, view, planned, preview, request.channel, ts)
    ctx.notifier.reply(request.channel, ts, routing_text.bluegreen_preview(
        PREVIEW, subsets.canary, view.virtual_services))
    record(ctx, request, "done", channel=request.channel, ts=ts,
           detail=f"preview header route {PREVIEW} → {subsets.canary}")
    # The 90/10 step is an ordinary rollout of one step (the same checks, state, analysis),
    # marked blue-green from its first write so no tick can see it otherwise.
    result = traffic.begin(ctx, request, steps=(BLUEGREEN_STEP,),
                           fields={"bluegreen": True, "title": title})
    ctx.notifier.reply(request.channel, ts, routing_text.bluegreen_next(
        view.name, names(subsets), approvals))
    return result


def start_plan(ctx: JobContext, view: ServiceView, subsets: Subsets,
               interval_s: float | None = None) -> Plan:
    """The start's writes, the preview route then the split, and the steps that follow."""
    target = Weights.canary_at(BLUEGREEN_STEP)
    steps = routing_text.bluegreen_steps(view.name, names(subsets), view.approvals.promote,
                                         interval_s or view.analysis.interval)
    return Plan(_two_writes(ctx, view, _preview(view, subsets),
                            _split(ctx, view, subsets, target)), steps)


def _ask_again(ctx: JobContext, request: Request, view: ServiceView, current: Rollout,
               attempt: int) -> str:
    """A blue-green still at 90/10 whose cutover request was rejected, expired or voided:
    the same command asks for the cutover again, on behalf of who asks now."""
    if request.command.dry_run:
        return show_plan(ctx, request, Plan(steps=(routing_text.cutover_asked_again(
            view.name, current.canary_subset, view.approvals.promote),)))
    bluegreen_cutover.ask(ctx, view, current, attempt, user=request.user)
    text = routing_text.cutover_asked_again(view.name, current.canary_subset,
                                            view.approvals.promote, request.user)
    if current.channel and current.thread_ts:
        ctx.notifier.reply(current.channel, current.thread_ts, text)
    record(ctx, request, "done", channel=current.channel, ts=current.thread_ts,
           detail=f"cutover asked for again (request {attempt})")
    return f"{view.name}: cutover asked for again"


def _two_writes(ctx: JobContext, view: ServiceView, first: Planner,
                then: Planner) -> tuple[ObjectChange, ...]:
    """Each VirtualService as read and as two writes in a row leave it: ``first`` from the
    very read and plan its write sends (``read_and_plan``), ``then`` planned on the object
    the first leaves (as the second write re-reads it)."""
    changes = []
    for item in read_and_plan(ctx, view, first):
        once = item.vs if item.http is None else _with_http(item.vs, item.http)
        second = then(once)
        twice = once if second is None else _with_http(once, second)
        namespace, name = qualified(view.namespace, item.name)
        changes.append(ObjectChange("VirtualService", namespace, name, item.vs, twice))
    return tuple(changes)


def _with_http(vs: dict[str, Any], http: list[Route]) -> dict[str, Any]:
    # What the merge patch of ``spec.http`` leaves: the list replaced, the rest as it was.
    return {**vs, "spec": {**vs["spec"], "http": http}}


def _cutover(ctx: JobContext, request: Request, view: ServiceView) -> str:
    """Approved (or needing no approval): all traffic to the other subset through the promote
    path, then the preview route goes. A retry after the promote only removes the route."""
    current = ctx.store.get(view.name)
    wanted = request.command.options[CUTOVER]
    if request.command.dry_run:
        return _cutover_plan(ctx, request, view)
    if current is None or current.id != wanted or current.phase is not Phase.PROMOTED:
        current = precheck(ctx, view, request)
        assert current is not None
        if current.phase is Phase.AWAITING_APPROVAL:
            _approved(ctx, request, view, current)
        traffic.promote(ctx, request)
    # A retry after the route's removal landed (its answer lost, Slack refused the report)
    # finds nothing left to remove: it says what its first attempt removed.
    changed = traffic.written_by_request(
        ctx, "cutover-planned", view, read_and_plan(ctx, view, plan_header_route_off),
        plan_header_route_off)
    rollout = ctx.store.get(view.name) or current
    if rollout.channel and rollout.thread_ts:
        ctx.notifier.reply(rollout.channel, rollout.thread_ts, routing_text.bluegreen_done(
            (rollout.stable_subset, rollout.canary_subset), changed))
    record(ctx, request, "done", channel=rollout.channel, ts=rollout.thread_ts,
           detail=f"preview header route removed from {', '.join(changed) or 'none'}")
    return f"{view.name}: cut over to {rollout.canary_subset}"


def _approved(ctx: JobContext, request: Request, view: ServiceView, current: Rollout) -> None:
    """Back to ready-to-promote, the approvers named: the promote takes it from there."""
    who = words.people(request.approved_by) if request.approved_by else "no approval needed"
    moved = ctx.store.update(view.name, lambda cur: machine.apply(
        cur, Event.APPROVED, time.time(), f"cutover: {who}")
        if cur is not None and cur.id == current.id and waiting_for_cutover(cur)
        and cur.phase is Phase.AWAITING_APPROVAL else None)
    if moved is None or moved.phase is not Phase.READY_TO_PROMOTE:
        raise Refused(routing_text.bluegreen_cutover_gone(
            view.name, moved.phase.value if moved is not None else "replaced"))


def _cutover_plan(ctx: JobContext, request: Request, view: ServiceView) -> str:
    """The cutover's two writes (the split, then the preview route's removal), refused as the
    cutover would be."""
    current = precheck(ctx, view, request)
    assert current is not None
    subsets, target = current.subsets, Weights(stable=0, canary=100)
    preflight(ctx.kube, view.namespace, view.virtual_services, view.name, subsets, target,
              allow_gitops=view.gitops_allowed)
    return show_plan(ctx, request, Plan(_two_writes(
        ctx, view, _split(ctx, view, subsets, target), plan_header_route_off),
        routing_text.cutover_steps(names(subsets))))
