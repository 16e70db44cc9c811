"""What every handler needs: the service's policy view, its subsets, its thread, the audit."""

from __future__ import annotations

from collections.abc import Callable

from jobs.adapters.audit import AuditEntry
from jobs.domain.routes import Subsets, Weights
from jobs.runtime.context import JobContext
from meshbot.commands import Request
from meshbot.errors import MeshbotError, Refused
from policies.links import expand
from policies.views import ServiceView
from rendering import common as words

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


def record(ctx: JobContext, request: Request, outcome: str, *, before: Weights | None = None,
           after: Weights | None = None, channel: str | None = None, ts: str | None = None,
           detail: str = "") -> None:
    permalink = None
    if channel and ts:
        try:
            permalink = ctx.notifier.permalink(channel, ts)
        except MeshbotError:  # a missing permalink must not lose the audit entry
            permalink = None
    ctx.audit.record(AuditEntry(
        actor=request.user, action=request.command.verb.value, target=request.command.target,
        outcome=outcome, request_id=request.id,
        before=str(before) if before else None, after=str(after) if after else None,
        approvers=request.approved_by, permalink=permalink, detail=detail,
    ))


def links_text(ctx: JobContext, view: ServiceView, start: float, end: float) -> str:
    """The policy's observability links for the service over [start, end], as one line."""
    links = expand(ctx.policy.links.model_dump(), service=view.name, namespace=view.namespace,
                   start=start, end=end, cluster=ctx.cluster or "")
    return words.links_line(links)
