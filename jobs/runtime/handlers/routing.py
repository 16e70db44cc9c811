"""Routing verbs beyond weights: a header route (ab) and mirroring (mirror); blue-green is
``handlers.bluegreen``.

Each reads and plans every VirtualService of the service before writing any, so a refusal
(GitOps owner, no managed route, no ready canary) changes nothing; each write is conditional on
the resourceVersion read, and a conflict re-reads and re-plans. meshbot writes only its header
route and the managed route's mirror fields (``jobs.routes_match``).
"""

from __future__ import annotations

from typing import Any

from jobs.domain.routes import Route, Subsets
from jobs.domain.routes_match import (
    HeaderMatch,
    current_header,
    current_mirror,
    plan_header_route,
    plan_header_route_off,
    plan_mirror,
    plan_mirror_off,
)
from jobs.runtime.context import JobContext
from jobs.runtime.handlers import traffic
from jobs.runtime.handlers.common import (
    first_found,
    plans,
    record,
    request_thread,
    service_view,
    show_plan,
    subsets_of,
)
from jobs.runtime.route_edits import changes, read_and_plan
from jobs.runtime.weights import defined_subsets, ensure_ready_canary
from meshbot.commands import Request
from meshbot.errors import MeshInvalid, Refused
from meshbot.plan import Plan
from policies.views import ServiceView
from rendering import routing as routing_text

MAX_ATTEMPTS = 5


def require_ready_canary(ctx: JobContext, view: ServiceView, subsets: Subsets) -> None:
    """Traffic (even one header's, or a mirrored copy) goes only to a defined subset with ready
    pods: no traffic ever shifts to a subset with nothing to serve it."""
    known = defined_subsets(ctx.kube, view.namespace, view.name)
    if subsets.canary not in known:
        raise MeshInvalid(
            f"no DestinationRule for host {view.name} defines subset {subsets.canary!r}: add it "
            f"(with the canary's version label) before sending traffic to it")
    ensure_ready_canary(ctx.kube, view.namespace, view.name, subsets.canary, known)


# --- /mesh ab -----------------------------------------------------------------------------------

@plans
def ab(ctx: JobContext, request: Request) -> str:
    view = service_view(ctx, request)
    subsets = subsets_of(ctx, view)
    if request.command.switch == "off":
        return _ab_off(ctx, request, view, subsets)
    header = HeaderMatch(request.command.options["header"].lower(),
                         request.command.options["value"])

    def on(vs: dict[str, Any]) -> list[Route] | None:
        return plan_header_route(vs, view.name, view.namespace, header, subsets.canary)

    planned = read_and_plan(ctx, view, on)
    require_ready_canary(ctx, view, subsets)
    if request.command.dry_run:
        return show_plan(ctx, request, Plan(changes(view, planned)))
    found = next((h for h in (current_header(p.vs) for p in planned) if h is not None), None)
    before = first_found(ctx, "header", None if found is None else str(found))
    ts = request_thread(ctx, request, request.channel, routing_text.ab_root(
        view.name, view.namespace, request.user, header, subsets.canary))
    changed = traffic.write_routes(ctx, request, view, planned, on, request.channel, ts)
    ctx.notifier.reply(request.channel, ts, routing_text.ab_applied(
        header, subsets.canary, view.virtual_services, changed, before))
    record(ctx, request, "done", channel=request.channel, ts=ts,
           detail=f"header route {before or 'none'} → {header} to {subsets.canary}")
    return f"{view.name}: header route {header}"


def _ab_off(ctx: JobContext, request: Request, view: ServiceView, subsets: Subsets) -> str:
    planned = read_and_plan(ctx, view, plan_header_route_off)
    found = next((h for h in (current_header(p.vs) for p in planned) if h is not None), None)
    header = first_found(ctx, "header", None if found is None else str(found))
    if header is None:
        raise Refused(routing_text.no_header_route(view.name))
    if request.command.dry_run:
        return show_plan(ctx, request, Plan(changes(view, planned)))
    ts = request_thread(ctx, request, request.channel, routing_text.ab_root(
        view.name, view.namespace, request.user, None, subsets.canary))
    changed = traffic.write_routes(ctx, request, view, planned, plan_header_route_off,
                                   request.channel, ts)
    ctx.notifier.reply(request.channel, ts, routing_text.ab_removed(header, changed))
    record(ctx, request, "done", channel=request.channel, ts=ts,
           detail=f"header route {header} → none")
    return f"{view.name}: header route removed"


# --- /mesh mirror -------------------------------------------------------------------------------

@plans
def mirror(ctx: JobContext, request: Request) -> str:
    view = service_view(ctx, request)
    subsets = subsets_of(ctx, view)
    command = request.command
    percent = None if command.switch == "off" else command.percent or 0
    if percent is None:
        def planner(vs: dict[str, Any]) -> list[Route] | None:
            return plan_mirror_off(vs, view.name, view.namespace)
    else:
        if percent == 0:
            raise Refused(routing_text.mirror_zero(view.name))
        if not view.mirror_safe and command.options.get("confirm") != "yes":
            raise Refused(routing_text.mirror_needs_confirmation(view.name, percent))

        def planner(vs: dict[str, Any]) -> list[Route] | None:
            return plan_mirror(vs, view.name, view.namespace, percent or 0, subsets.canary)

    planned = read_and_plan(ctx, view, planner)
    before, to_do = first_found(ctx, "mirror", [
        current_mirror(planned[0].vs, view.name, view.namespace),
        any(p.http is not None for p in planned)])
    if percent is None and not to_do:
        raise Refused(routing_text.not_mirrored(view.name))
    if percent is not None:
        require_ready_canary(ctx, view, subsets)
    if command.dry_run:
        return show_plan(ctx, request, Plan(changes(view, planned)))
    ts = request_thread(ctx, request, request.channel, routing_text.mirror_root(
        view.name, view.namespace, request.user, percent, subsets.canary))
    changed = traffic.write_routes(ctx, request, view, planned, planner, request.channel,
                                   ts)
    ctx.notifier.reply(request.channel, ts, routing_text.mirror_applied(
        percent, before, subsets.canary, view.virtual_services, changed, view.mirror_safe))
    shown = "none" if before is None else f"{before:g}%"
    after = "none" if percent is None else f"{percent}% to {subsets.canary}"
    record(ctx, request, "done", channel=request.channel, ts=ts,
           detail=f"mirror {shown} → {after}")
    return f"{view.name}: mirror {after}"
