"""Canary at a fixed weight, rollback, and status: the verbs that read or set the split."""

from __future__ import annotations

import logging
import time

from bot import messages
from jobs import rollout as machine
from jobs.context import JobContext
from jobs.handlers.common import names, pair, record, request_thread, service_view, subsets_of
from jobs.kube import KubeClient
from jobs.rollout import Event, Rollout
from jobs.routes import Weights, read_weights
from jobs.store import RolloutStore
from jobs.weights import preflight, set_weights
from meshbot.commands import Request
from meshbot.errors import MeshbotError

log = logging.getLogger("meshbot.jobs")


def _still_wanted(store: RolloutStore, service: str, rollout_id: str) -> bool:
    current = store.get(service)
    return current is not None and current.id == rollout_id and not current.phase.terminal


def canary(ctx: JobContext, request: Request) -> str:
    view = service_view(ctx, request)
    percent = request.command.percent or 0
    target = Weights.canary_at(percent)
    subsets = subsets_of(view)
    before = preflight(ctx.kube, view.namespace, view.virtual_services, view.name, subsets,
                       target, allow_gitops=view.gitops_allowed)
    channel = request.channel
    ts = request_thread(ctx, request, channel, messages.canary_root(
        view.name, view.namespace, request.user, pair(before), pair(target), names(view)))
    now = time.time()
    analysis = view.analysis
    rollout = machine.start(
        rollout_id=request.id, service=view.name, namespace=view.namespace, steps=(percent,),
        fixed=True, interval_s=analysis.interval, failure_threshold=analysis.failure_threshold,
        no_data_policy=str(analysis.no_data), deadline_s=analysis.deadline,
        requested_by=request.user, channel=channel, now=now,
    ).model_copy(update={"thread_ts": ts})
    ctx.store.put(rollout)
    before, after = set_weights(
        ctx.kube, view.namespace, view.virtual_services, view.name, subsets, target,
        should_continue=lambda: _still_wanted(ctx.store, view.name, rollout.id),
        allow_gitops=view.gitops_allowed,
    )
    ctx.notifier.reply(channel, ts, messages.weights_applied(
        pair(before), pair(after), names(view), view.virtual_services))
    record(ctx, request, "done", before=before, after=after, channel=channel, ts=ts)
    return f"{view.name}: {after}"


def rollback(ctx: JobContext, request: Request) -> str:
    """All traffic back to stable. Never waits for Slack: the weights change first."""
    view = service_view(ctx, request)
    now = time.time()
    who = f"<@{request.user}>" if request.user.startswith(("U", "W")) else request.user

    def mark(current: Rollout | None) -> Rollout | None:
        # Marked first: any job still writing this rollout's weight sees it and stops.
        if current is None or current.phase is machine.Phase.ROLLED_BACK:
            return None
        return machine.apply(current, Event.ROLLBACK, now, f"by {who}")

    rollout = ctx.store.update(view.name, mark)
    before, after = set_weights(ctx.kube, view.namespace, view.virtual_services, view.name,
                                subsets_of(view), Weights(stable=100, canary=0),
                                allow_gitops=view.gitops_allowed)
    text = (messages.already_stable(names(view)) if before == after
            else messages.rolled_back(pair(before), names(view)))
    channel, ts = _report_rollback(ctx, request, view.name, view.namespace, rollout, text)
    record(ctx, request, "done", before=before, after=after, channel=channel, ts=ts)
    return f"{view.name}: {after}"


def _report_rollback(ctx: JobContext, request: Request, service: str, namespace: str,
                     rollout: Rollout | None, text: str) -> tuple[str | None, str | None]:
    """Into the rollout's thread if it has one, else a new thread; Slack being down is logged."""
    root = messages.rollback_root(service, namespace, request.user, "requested")
    try:
        if rollout is not None and rollout.thread_ts and rollout.channel:
            channel, ts = rollout.channel, rollout.thread_ts
            ctx.notifier.reply(channel, ts, root)
        else:
            channel = request.channel
            ts = request_thread(ctx, request, channel, root)
        ctx.notifier.reply(channel, ts, text)
        return channel, ts
    except MeshbotError as exc:
        log.warning("rollback of %s done, but not reported in Slack: %s", service, exc.message)
        return None, None


def current_weights(kube: KubeClient, namespace: str, vs_name: str, service: str,
                    stable: str, canary_subset: str) -> Weights:
    from jobs.routes import Subsets

    vs_ns, _, name = vs_name.rpartition("/")
    vs = kube.get_virtual_service(vs_ns or namespace, name)
    return read_weights(vs, service, namespace, Subsets(stable=stable, canary=canary_subset))


def status(ctx: JobContext, request: Request) -> str:
    view = service_view(ctx, request)
    weights = current_weights(ctx.kube, view.namespace, view.virtual_services[0], view.name,
                              view.subsets.stable, view.subsets.canary)
    rollout = ctx.store.get(view.name)
    detail: list[str] = []
    if rollout is not None:
        if not rollout.fixed:
            detail.append(f"Step {rollout.step_index + 1}/{len(rollout.steps)} "
                          f"(steps {', '.join(map(str, rollout.steps))})")
        detail.append(f"Requested by <@{rollout.requested_by}>; failed checks "
                      f"{rollout.failed_checks}/{rollout.failure_threshold}")
        detail.extend(rollout.last_values)
    text = messages.status(view.name, view.namespace, pair(weights), names(view),
                           rollout.phase.value if rollout else None, detail)
    ctx.notifier.post_root(request.channel, text)
    return text
