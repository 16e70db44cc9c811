"""What every handler needs: the service's policy view, its subsets, its thread, the audit."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from rq import get_current_job

from jobs.adapters.audit import AuditEntry
from jobs.domain.routes import Subsets, Weights
from jobs.runtime.context import JobContext
from jobs.runtime.reports import report
from meshbot.commands import Request
from meshbot.errors import MeshbotError, Refused
from meshbot.plan import Plan
from policies.links import expand
from policies.views import ServiceView
from rendering import common as words
from rendering import plan as plan_text
from rendering import replies

log = logging.getLogger("meshbot.jobs")
THREAD_TTL_S = 7 * 24 * 3600
_PLANS = "meshbot_plans_dry_run"

Handler = Callable[[JobContext, Request], str]


def plans(handler: Handler) -> Handler:
    """Marks a handler that honours ``command.dry_run``: it shows its plan and writes nothing.
    A dry run of any other handler is refused, so a new verb cannot change the mesh by mistake
    when asked only for its plan."""
    setattr(handler, _PLANS, True)
    return handler


def plans_dry_run(handler: Handler) -> bool:
    return bool(getattr(handler, _PLANS, False))


# Set while an approval request asks a handler for its plan: the dry run is only computed.
_capture: ContextVar[list[Plan] | None] = ContextVar("meshbot_plan_capture", default=None)


def planning_only() -> bool:
    """Whether this dry run is an approval request's: a handler that tells more than its
    plan (restore's thread) tells nothing then."""
    return _capture.get() is not None


def show_plan(ctx: JobContext, request: Request, plan: Plan) -> str:
    """Where a handler's dry run ends, before anything is written, locked or stored: the plan
    goes to the caller alone (a dry run opens no thread) and into the audit as "dry-run"."""
    found = _capture.get()
    if found is not None:
        found.append(plan)
        return "planned"
    shown = request.command.model_copy(update={"dry_run": False})
    ctx.notifier.ephemeral(plan_text.dry_run_reply(words.describe(shown), plan),
                           response_url=request.response_url, channel=request.channel,
                           user=request.user)
    record(ctx, request, "dry-run", detail=plan_text.plan_summary(plan))
    return f"dry run: {len(plan.effective)} objects would change"


def plan_of(handler: Handler, ctx: JobContext, request: Request) -> Plan:
    """The plan ``handler``'s own dry run of ``request`` arrives at (nothing is told), so an
    approval request shows exactly what the approved job would write. ``Refused`` (and any
    other error) as the handler would raise it."""
    found: list[Plan] = []
    token = _capture.set(found)
    try:
        dry = request.command.model_copy(update={"dry_run": True})
        handler(ctx, request.model_copy(update={"command": dry}))
    finally:
        _capture.reset(token)
    if not found:  # a handler marked @plans whose dry run did not end in show_plan
        raise RuntimeError(f"{request.command.verb.value} computed no plan")
    return found[0]


def service_view(ctx: JobContext, request: Request) -> ServiceView:
    name = request.command.target or ""
    view = ctx.policy.service(name)
    if view is None:  # the bot checked; the policy may have changed since
        raise Refused(f"unknown service `{name}`: it is not in meshbot's policy")
    return view


def subsets_of(ctx: JobContext, view: ServiceView) -> Subsets:
    """Which subset plays stable and which canary now: after a promote the roles swap, so the
    next rollout shifts traffic from the live subset to the other one (blue/green)."""
    first, second = view.subsets.stable, view.subsets.canary
    live = ctx.store.live_subset(view.name, default=first)
    return Subsets(stable=live, canary=second if live == first else first)


def names(subsets: Subsets) -> tuple[str, str]:
    return subsets.stable, subsets.canary


def pair(weights: Weights) -> tuple[int, int]:
    return weights.stable, weights.canary


def request_thread(ctx: JobContext, request: Request, channel: str, text: str) -> str:
    """The thread root for this request, posted once even if the job is retried."""
    key = f"meshbot:thread:{request.id}"
    existing = ctx.redis.get(key)
    if existing:
        return existing.decode() if isinstance(existing, bytes) else str(existing)
    ts = ctx.notifier.post_root(channel, text)
    ctx.redis.set(key, ts, ex=THREAD_TTL_S)
    return ts


def thread_of(ctx: JobContext, request: Request) -> tuple[str | None, str | None]:
    """The thread a request's words go to, if there is one yet: the thread it opened itself
    (``request_thread``), else its service's rollout thread (where a promote, a pause or an
    approved step speaks); (None, None) when it has none (a canary that never started)."""
    raw = ctx.redis.get(f"meshbot:thread:{request.id}")
    if raw:
        return request.channel, raw.decode() if isinstance(raw, bytes) else str(raw)
    rollout = ctx.store.get(request.command.target) if request.command.target else None
    if rollout is not None and rollout.channel and rollout.thread_ts:
        return rollout.channel, rollout.thread_ts
    return None, None


def record(ctx: JobContext, request: Request, outcome: str, *,
           before: Weights | str | None = None, after: Weights | str | None = None,
           channel: str | None = None, ts: str | None = None, detail: str = "",
           target: str | None = None) -> None:
    """The request's audit entry, linked to its message (``ts`` in ``channel``) when Slack gives
    a link; ``target``: what it is about, when not the command's target."""
    permalink = ctx.notifier.link(channel, ts) if channel and ts else None
    ctx.audit.record(AuditEntry(
        actor=request.user, action=request.command.verb.value,
        target=target or request.command.target, outcome=outcome, request_id=request.id,
        before=str(before) if before else None, after=str(after) if after else None,
        approvers=request.approved_by, permalink=permalink, detail=detail,
    ))


def links_text(ctx: JobContext, view: ServiceView, start: float, end: float) -> str:
    """The policy's observability links for the service over [start, end], as one line."""
    links = expand(ctx.policy.links.model_dump(), service=view.name, namespace=view.namespace,
                   start=start, end=end, cluster=ctx.cluster or "")
    return words.links_line(links)


def end_overtaken(ctx: JobContext, request: Request, channel: str | None = None,
                  ts: str | None = None, text: str | None = None) -> str:
    """A rollback accepted after ``request`` won (before the request committed anything, or
    after its write, which was then put back): the caller is told (``text``, by default that
    nothing was applied), the thread the request had opened (``channel``/``ts``) says so, and
    the audit records it "overtaken" (which ends the request: a second run returns at once)."""
    text = text or replies.overtaken(request.command)
    try:
        ctx.notifier.ephemeral(text, response_url=request.response_url,
                               channel=request.channel, user=request.user)
    except MeshbotError as exc:
        log.warning("could not tell %s: %s", request.user, exc.message)
    if channel and ts:
        report(ctx, channel, ts, text)  # Slack down: owed to the thread, delivered later
    record(ctx, request, "overtaken", channel=channel, ts=ts, detail=text)
    return "overtaken"


def first_found(ctx: JobContext, what: str, value: Any) -> Any:
    """``value`` (JSON) as the request's first attempt read it: a retry after its write landed
    (Slack failed the report; the worker was killed) reads its own write, which it must neither
    report as what was there before nor refuse as "nothing to do". Outside a job: ``value``."""
    job = get_current_job()
    if job is None:
        return value
    return json.loads(ctx.store.first_seen(f"{job.id}:{what}", json.dumps(value)))
