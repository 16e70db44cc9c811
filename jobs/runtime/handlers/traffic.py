"""The verbs that set or read a service's split: canary, rollout, promote, rollback, status."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping

from rq import get_current_job

from jobs.adapters.rollout_store import TICK_OWNER, RolloutStore
from jobs.domain import rollout as machine
from jobs.domain.rollout import Event, Phase, Rollout
from jobs.domain.routes import Subsets, Weights
from jobs.runtime import api
from jobs.runtime.bluegreen_cutover import void as void_cutover
from jobs.runtime.context import JobContext
from jobs.runtime.handlers.common import (
    first_found,
    links_text,
    names,
    pair,
    plans,
    record,
    request_thread,
    service_view,
    show_plan,
    subsets_of,
)
from jobs.runtime.reconcile import ALIVE, _job_status
from jobs.runtime.reports import report, report_in_new_thread
from jobs.runtime.route_edits import (
    Planned,
    Planner,
    back_to_stable,
    clear_canary_routes,
    plan_back_to_stable,
    write_planned,
)
from jobs.runtime.weights import (
    Abandoned,
    Overtaken,
    defined_subsets,
    live_weights,
    plan_split,
    set_weights,
)
from meshbot import metrics
from meshbot.commands import Request, Verb
from meshbot.errors import MeshbotError, Refused, UserError
from meshbot.plan import Plan
from policies.views import ServiceView
from rendering import plan as plan_text
from rendering import replies
from rendering import traffic as traffic_text

log = logging.getLogger("meshbot.jobs")

# The time range the observability links show: from a little before the rollout began, and
# (in the thread's root, written at the start) for the hour that follows.
LINK_LEAD_S = 300.0
LINK_SPAN_S = 3600.0


def writer() -> str:
    """Who owns a service's unapplied mark: this RQ job, or (a shell rollback) the ticker."""
    job = get_current_job()
    return job.id if job is not None else TICK_OWNER


@contextlib.contextmanager
def refused_before_commit(ctx: JobContext, service: str) -> Iterator[None]:
    """A refusal (or an overtaken request) raised here came before the state changed: the mark
    must not outlive it, or the reconcile would write weights that were never decided."""
    try:
        yield
    except (UserError, Overtaken):
        ctx.store.mark_applied(service, writer())
        raise


# What ``not_overtaken`` reads: a commit watches it, so a rollback accepted between the check
# and the write makes the transaction check again.
COMMIT_WATCH = (api.ROLLBACK_SEQUENCE_KEY,)


def not_overtaken(ctx: JobContext, request: Request, channel: str | None = None,
                  ts: str | None = None) -> None:
    """Raise ``Overtaken`` if a rollback of the service was accepted after ``request``. Called
    inside the transaction that commits the request's rollout state (``watch=COMMIT_WATCH``),
    not only when its job starts: a rollback acked while the job runs, and run meanwhile by
    another worker, must still win. ``channel``/``ts``: the thread the request opened."""
    if not request.command.dry_run and api.overtaken(ctx.redis, request):
        raise Overtaken(replies.overtaken(request.command), channel=channel, ts=ts)


# Where a route edit keeps the names it is about to write (``written_by_request``).
ROUTES_PLANNED = "routes-planned"


def write_routes(ctx: JobContext, request: Request, view: ServiceView, planned: list[Planned],
                 plan: Planner, channel: str | None, ts: str | None) -> list[str]:
    """``write_planned`` for a request's route edit (a header route, a mirror, blue-green's
    preview route), which commits nothing but the write itself: a rollback accepted after the
    request is looked for just before the write, and again after it — one accepted while the
    write was on the wire may have found nothing to remove and run to its end, the write
    landing after it: what was written is removed again (as the rollback removes it) and the
    request ends overtaken. The names of the objects changed, by whichever attempt wrote them
    (``written_by_request``)."""
    not_overtaken(ctx, request, channel, ts)
    changed = written_by_request(ctx, ROUTES_PLANNED, view, planned, plan)
    if changed and not request.command.dry_run and api.overtaken(ctx.redis, request):
        clear_canary_routes(ctx, view)
        log.warning("%s: %s's route edit landed after a rollback; removed again", view.name,
                    request.id, extra={"service": view.name})
        raise Overtaken(replies.overtaken(request.command), channel=channel, ts=ts)
    return changed


def undo_unchecked_routes(ctx: JobContext, request: Request) -> list[str]:
    """For ``request``, overtaken at its start: an earlier attempt that was about to write its
    route edit (it kept the names, ``written_by_request``) ended without its after-write check
    — its worker killed, or its write answered nothing in time — and that write may have
    landed after the rollback, which then found nothing to remove. Remove meshbot's header
    route and mirror again, as the rollback does. The VirtualServices changed."""
    job = get_current_job()
    if job is None or not ctx.store.was_seen(f"{job.id}:{ROUTES_PLANNED}"):
        return []
    view = ctx.policy.service(request.command.target or "")
    if view is None:  # the service left the policy: meshbot no longer touches it
        return []
    removed = clear_canary_routes(ctx, view)
    if removed:
        log.warning("%s: %s's route edit landed after a rollback, unchecked; removed again",
                    view.name, request.id, extra={"service": view.name})
    return removed


def written_by_request(ctx: JobContext, what: str, view: ServiceView, planned: list[Planned],
                       plan: Planner) -> list[str]:
    """``write_planned``; the names of the objects this request changed, whichever attempt
    wrote them. The names it is about to change are kept first, under ``what``: a retry after
    the write landed (its answer lost, the worker killed, the report refused by Slack) finds
    nothing left to write and must still name them. A first attempt names only what it wrote
    (a conflict's re-plan may have found one already as asked by someone else)."""
    attempt = os.urandom(8).hex()
    first = first_found(ctx, what, {"attempt": attempt,
                                    "names": [p.name for p in planned if p.http is not None]})
    written = write_planned(ctx, view, planned, plan)
    if first["attempt"] == attempt:
        return written
    earlier = set(first["names"])
    return [p.name for p in planned if p.name in earlier or p.name in written]


def still_wanted(store: RolloutStore, service: str, rollout_id: str,
                 weight: int | None = None) -> bool:
    """Whether a rollout still wants its weight: after a rollback a job never re-applies it,
    and a writer whose step was overtaken (a later tick moved the rollout on) never writes it."""
    current = store.get(service)
    return (current is not None and current.id == rollout_id and not current.phase.terminal
            and (weight is None or current.weight == weight))


def apply_weight(ctx: JobContext, view: ServiceView, rollout: Rollout,
                 target: Weights) -> tuple[Weights, Weights]:
    """Write the rollout's weight. Stopped because the rollout was rolled back meanwhile
    (``Abandoned``): a VirtualService already written (the first of several, its write landing
    after the rollback had read it) is put back to stable before the stop is raised."""
    subsets = rollout.subsets
    job = get_current_job()
    try:
        return set_weights(
            ctx.kube, view.namespace, view.virtual_services, view.name, subsets, target,
            should_continue=lambda: still_wanted(ctx.store, view.name, rollout.id,
                                                 target.canary),
            allow_gitops=view.gitops_allowed,
            remember_before=(lambda read: ctx.store.first_before(job.id, read))
            if job is not None else None,
        )
    except Abandoned:
        if rolled_back(ctx, view, rollout):
            put_back(ctx, view, rollout)
        raise


def rolled_back(ctx: JobContext, view: ServiceView, rollout: Rollout) -> bool:
    """Whether ``rollout`` is still the service's, and was rolled back (or cancelled)."""
    now = ctx.store.get(view.name)
    return (now is not None and now.id == rollout.id
            and now.phase in (Phase.ROLLED_BACK, Phase.CANCELLED))


def put_back(ctx: JobContext, view: ServiceView, rollout: Rollout) -> None:
    """Stable 100 / canary 0 on the rollout's VirtualServices, unless a newer rollout started
    since (its write wins). The service's mark is this writer's until the weights are back
    (a rollback's job still running keeps its own), so a worker dying here is settled by the
    reconcile (the rollout rolled back: its weights written); it is cleared after."""
    if live_writer(ctx, view.name) is None:
        ctx.store.mark_unapplied(view.name, time.time(), writer())

    def ours() -> bool:  # no rollout started since the rollback
        cur = ctx.store.get(view.name)
        return cur is None or cur.id == rollout.id

    with contextlib.suppress(Abandoned):  # a newer rollout's write wins over this one
        set_weights(ctx.kube, view.namespace, view.virtual_services, view.name,
                    rollout.subsets, Weights(stable=100, canary=0), should_continue=ours,
                    allow_gitops=view.gitops_allowed)
    ctx.store.mark_applied(view.name, writer())


def undo_if_overtaken(ctx: JobContext, request: Request, view: ServiceView, rollout: Rollout,
                      channel: str | None, ts: str | None) -> None:
    """After the request's write: if a rollback was accepted after the request (or the rollout
    was rolled back) meanwhile, that rollback may have found the mesh as it wanted it and
    written nothing while this write was on the wire, which then landed after it. The write is
    put back (stable 100 / canary 0) and the request ends overtaken (or abandoned), never done:
    the last accepted command, the rollout's phase, the mesh, the thread and the audit agree.
    A worker dying before this check is settled by the reconcile: the rollback left the mark
    with this job (``live_writer``), and the rollback's weights are written once it ended."""
    if request.command.dry_run:
        return
    overtaken = api.overtaken(ctx.redis, request)
    if not (overtaken or rolled_back(ctx, view, rollout)):
        return  # any rollback comes after this write landed, and reads it
    put_back(ctx, view, rollout)
    subsets = rollout.subsets
    log.warning("%s: %s's write landed after a rollback; put back to stable 100", view.name,
                request.id, extra={"service": view.name})
    if overtaken:
        raise Overtaken(replies.overtaken_undone(request.command, *names(subsets)),
                        channel=channel, ts=ts)
    raise Abandoned(f"{view.name} was rolled back while this change was being written; it was "
                    "put back to stable 100")


def plan_weights(ctx: JobContext, view: ServiceView, subsets: Subsets, target: Weights,
                 steps: tuple[str, ...] = ()) -> Plan:
    """The split's write as a plan: the read, plan and checks ``set_weights`` makes."""
    split = plan_split(ctx.kube, view.namespace, view.virtual_services, view.name, subsets,
                       target, allow_gitops=view.gitops_allowed)
    return Plan(split.changes, steps)


def canary(ctx: JobContext, request: Request) -> str:
    """A rollout with one step that never advances: watched at a fixed weight."""
    percent = request.command.percent or 0
    return _begin(ctx, request, steps=(percent,), fixed=True)


@plans
def rollout(ctx: JobContext, request: Request) -> str:
    view = service_view(ctx, request)
    steps = request.command.steps or tuple(view.analysis.steps)
    return _begin(ctx, request, steps=steps, fixed=False)


def begin(ctx: JobContext, request: Request, *, steps: tuple[int, ...],
          fields: Mapping[str, object]) -> str:
    """A stepped rollout started by another verb (blue-green), its own ``fields`` in the
    rollout's state from the first write on."""
    return _begin(ctx, request, steps=steps, fixed=False, fields=fields)


def _begin(ctx: JobContext, request: Request, *, steps: tuple[int, ...], fixed: bool,
           fields: Mapping[str, object] | None = None) -> str:
    view = service_view(ctx, request)
    current = ctx.store.get(view.name)
    if current is not None and current.id == request.id and current.phase.terminal:
        # A retry of this very request after a rollback (or promote) ended it: never re-apply.
        raise Abandoned(f"{view.name}'s rollout ended ({current.phase.value}) before this "
                        "retry; nothing was re-applied")
    if current is not None and current.id == request.id:
        return _resume(ctx, request, view, current)
    if current is not None and not current.phase.terminal and current.id != request.id:
        raise Refused(f"{view.name} already has a rollout {current.phase.value.replace('_', ' ')}"
                      f" (requested by <@{current.requested_by}>): `/mesh rollback {view.name}`"
                      " or `/mesh promote` it first")
    subsets = subsets_of(ctx, view)
    target = Weights.canary_at(steps[0])
    analysis = view.analysis
    interval = request.command.interval_s or analysis.interval
    split = plan_split(ctx.kube, view.namespace, view.virtual_services, view.name, subsets,
                       target, allow_gitops=view.gitops_allowed)
    if request.command.dry_run:
        return show_plan(ctx, request, Plan(split.changes, plan_text.rollout_steps(
            steps, interval, fixed, analysis.deadline)))
    before = split.before
    defined = defined_subsets(ctx.kube, view.namespace, view.name)
    labels = defined.get(subsets.canary, {})
    channel = request.channel
    header = traffic_text.rollout_header(request.command, view.name, view.namespace, request.user,
                                     pair(before), pair(target), names(subsets))
    now = time.time()
    links = links_text(ctx, view, now - LINK_LEAD_S, now + LINK_SPAN_S)
    header = "\n".join(line for line in (header, links) if line)
    ts = request_thread(ctx, request, channel, header)
    started = machine.start(
        rollout_id=request.id, service=view.name, namespace=view.namespace, steps=steps,
        fixed=fixed, interval_s=interval, failure_threshold=analysis.failure_threshold,
        no_data_policy=str(analysis.no_data), deadline_s=analysis.deadline,
        requested_by=request.user, channel=channel, now=time.time(),
    ).model_copy(update={
        "thread_ts": ts, "status_ts": ts, "title": header, "stable_subset": subsets.stable,
        "canary_subset": subsets.canary,
        "canary_version": labels.get(analysis.version_label, ""),
        "stable_version": defined.get(subsets.stable, {}).get(analysis.version_label, ""),
        **(fields or {}),
    })

    def commit(_current: Rollout | None) -> Rollout:
        # Written only if no rollback was accepted since this request was: the check and the
        # write are one transaction.
        not_overtaken(ctx, request, channel, ts)
        return started

    ctx.store.mark_unapplied(view.name, time.time(), writer())
    with refused_before_commit(ctx, view.name):
        ctx.store.update(view.name, commit, watch=COMMIT_WATCH)
    before, after = apply_weight(ctx, view, started, target)
    undo_if_overtaken(ctx, request, view, started, channel, ts)
    ctx.store.mark_applied(view.name, writer())
    ctx.notifier.reply(channel, ts, traffic_text.weights_applied(
        pair(before), pair(after), names(subsets), view.virtual_services))
    record(ctx, request, "done", before=before, after=after, channel=channel, ts=ts)
    return f"{view.name}: {after}"


def _resume(ctx: JobContext, request: Request, view: ServiceView, current: Rollout) -> str:
    """A retry (or a takeover) of the request that started this rollout: it goes on from where
    the rollout is now — its first attempt, or the analysis since, may have moved it — and is
    never restarted at its first step."""
    target = Weights.canary_at(current.weight)
    ctx.store.mark_unapplied(view.name, time.time(), writer())
    before, after = apply_weight(ctx, view, current, target)
    undo_if_overtaken(ctx, request, view, current, current.channel, current.thread_ts)
    ctx.store.mark_applied(view.name, writer())
    if before != after and current.channel and current.thread_ts:
        report(ctx, current.channel, current.thread_ts, traffic_text.weights_applied(
            pair(before), pair(after), names(current.subsets), view.virtual_services))
    record(ctx, request, "done", before=before, after=after, channel=current.channel,
           ts=current.thread_ts)
    return f"{view.name}: {after}"


@plans
def promote(ctx: JobContext, request: Request) -> str:
    """All traffic to the canary subset, which becomes the live one."""
    view = service_view(ctx, request)
    now = time.time()
    current = ctx.store.get(view.name)
    if current is not None and current.phase is Phase.PROMOTED \
            and current.moved_by == request.id and not request.command.dry_run:
        # A retry (or a takeover) of this very promote, whose first attempt committed the
        # state but did not write the weights (a 5xx): write them now, as decided.
        ctx.store.mark_unapplied(view.name, now, writer())
        return _write_promoted(ctx, request, view, current)
    if current is None or current.phase.terminal:
        raise Refused(f"{view.name} has no rollout to promote: start one with "
                      f"`/mesh rollout {view.name}`")
    if request.command.dry_run:
        # The state machine is pure: it refuses here what the stored update would refuse.
        would = machine.apply(current, Event.PROMOTE, now, f"by <@{request.user}>")
        return show_plan(ctx, request, plan_weights(
            ctx, view, would.subsets, Weights(stable=0, canary=100),
            (plan_text.promote_step(view.name, would.subsets.canary),)))
    ctx.store.mark_unapplied(view.name, now, writer())

    def promote_it(cur: Rollout | None) -> Rollout | None:
        if cur is None or cur.id != current.id:
            return None
        not_overtaken(ctx, request, cur.channel, cur.thread_ts)
        # ``moved_by``: which request promoted it, so that request's retry writes it again.
        return machine.apply(cur, Event.PROMOTE, now, f"by <@{request.user}>").model_copy(
            update={"moved_by": request.id})

    with refused_before_commit(ctx, view.name):
        promoted = ctx.store.update(view.name, promote_it, watch=COMMIT_WATCH)
        if promoted is None or promoted.phase is not Phase.PROMOTED:
            raise Refused(f"{view.name} changed while promoting; see `/mesh status {view.name}`")
    return _write_promoted(ctx, request, view, promoted)


def _write_promoted(ctx: JobContext, request: Request, view: ServiceView,
                    promoted: Rollout) -> str:
    """Write a promoted rollout's weights (all on its canary subset) and say so, once; a retry
    of the promote runs this again, reporting the split its first attempt read."""
    subsets = promoted.subsets
    job = get_current_job()

    def still_promoted() -> bool:  # a rollback since: its weights win, never re-apply these
        now = ctx.store.get(view.name)
        return (now is not None and now.id == promoted.id and now.phase is Phase.PROMOTED
                and now.moved_by == promoted.moved_by)

    before, after = set_weights(ctx.kube, view.namespace, view.virtual_services, view.name,
                                subsets, Weights(stable=0, canary=100),
                                should_continue=still_promoted,
                                allow_gitops=view.gitops_allowed,
                                remember_before=(lambda read: ctx.store.first_before(
                                    job.id, read)) if job is not None else None)
    undo_if_overtaken(ctx, request, view, promoted, promoted.channel, promoted.thread_ts)
    ctx.store.set_live_subset(view.name, subsets.canary)
    ctx.store.mark_applied(view.name, writer())
    text = traffic_text.promoted(pair(before), names(subsets), request.approved_by)
    if promoted.channel and promoted.thread_ts:
        ctx.notifier.reply(promoted.channel, promoted.thread_ts, text)
    record(ctx, request, "done", before=before, after=after, channel=promoted.channel,
           ts=promoted.thread_ts)
    return f"{view.name}: promoted"


@plans
def rollback(ctx: JobContext, request: Request) -> str:
    """All traffic back to the live subset. Never waits for Slack: the weights change first."""
    view = service_view(ctx, request)
    now = time.time()
    who = f"<@{request.user}>" if request.user.startswith(("U", "W")) else request.user
    event = Event.ABORT if request.command.verb is Verb.ABORT else Event.ROLLBACK

    def mark(current: Rollout | None) -> Rollout | None:
        # Marked first: any job still writing this rollout's weight sees it and stops.
        if current is None or current.phase is Phase.ROLLED_BACK:
            return None
        if event is Event.ABORT and current.phase.terminal:
            raise Refused(f"{view.name} has no rollout in progress to abort")
        return machine.apply(current, event, now, f"by {who}")

    if request.command.dry_run:
        marked = mark(ctx.store.get(view.name))
        plan = plan_back_to_stable(ctx, view, subsets_of(ctx, view))
        steps = (plan_text.rollout_marked(view.name, marked.phase.value),) if marked else ()
        return show_plan(ctx, request, Plan(plan.changes, steps))
    # First: a worker dying next is finished for (the rollback wins). Unless a change's job
    # holds the mark: its write may still be on the wire and land after this rollback read the
    # VirtualService (finding nothing to write). Its mark stays, so if that job ends without
    # its own after-write check (its worker killed, its retry refused as overtaken at its
    # start), the reconcile writes this rollback's weights once it has ended.
    if live_writer(ctx, view.name) is None:
        ctx.store.mark_unapplied(view.name, now, writer())
    with refused_before_commit(ctx, view.name):
        marked = ctx.store.update(view.name, mark)
    subsets = subsets_of(ctx, view)
    before, after, cleared = back_to_stable(ctx, view, subsets)
    ctx.store.mark_applied(view.name, writer())
    void_cutover(ctx, marked, f"`/mesh {request.command.verb.value}` by {who}")
    metrics.rollback("manual")
    text = (traffic_text.already_stable(names(subsets)) if before == after and not cleared
            else traffic_text.rolled_back(pair(before), names(subsets)))
    channel, ts = _report(ctx, request, view, marked, text)
    record(ctx, request, "done", before=before, after=after, channel=channel, ts=ts)
    return f"{view.name}: {after}"


def live_writer(ctx: JobContext, service: str) -> str | None:
    """The RQ job, other than this one, that holds the service's unapplied mark and has not
    ended (queued, started — also on a worker that died —, scheduled for a retry): a writer
    whose write may still land. None when the mark is nobody's, the tick's or this job's."""
    if service not in ctx.store.unapplied_since(float("inf")):
        return None
    owner = ctx.store.unapplied_owner(service)
    if owner in (TICK_OWNER, writer()):
        return None
    return owner if _job_status(ctx, owner) in ALIVE else None


def _report(ctx: JobContext, request: Request, view: ServiceView, current: Rollout | None,
            text: str) -> tuple[str | None, str | None]:
    """Into the rollout's thread if it has one, else a new thread; what Slack does not take
    now (down, 5xx) is owed and delivered by the ticker when it is back."""
    root = traffic_text.rollback_root(view.name, view.namespace, request.user, request.command.verb)
    if current is not None and current.thread_ts and current.channel:
        # The rollout's thread exists: what Slack does not take now is delivered later.
        report(ctx, current.channel, current.thread_ts, root)
        report(ctx, current.channel, current.thread_ts, text)
        return current.channel, current.thread_ts
    try:
        channel = request.channel
        ts = report_in_new_thread(ctx, channel, root, text,
                                  lambda: request_thread(ctx, request, channel, root))
        return channel, ts
    except MeshbotError as exc:
        log.warning("rollback of %s done, but not reported in Slack: %s", view.name, exc.message)
        return None, None


@plans
def pause_or_resume(ctx: JobContext, request: Request) -> str:
    view = service_view(ctx, request)
    current = ctx.store.get(view.name)
    if current is not None and current.phase is Phase.AWAITING_APPROVAL \
            and request.command.verb is Verb.RESUME:
        return _approved_step(ctx, request, view, current)
    event = Event.PAUSE if request.command.verb is Verb.PAUSE else Event.RESUME
    now = time.time()
    if current is None:
        raise Refused(f"{view.name} has no rollout to {event.value}")
    if request.command.dry_run:  # only the rollout's state changes, no object
        would = machine.apply(current, event, now, f"by <@{request.user}>")
        return show_plan(ctx, request, Plan(steps=(plan_text.rollout_state(
            view.name, current.phase.value, would.phase.value, would.weight),)))
    changed = ctx.store.update(view.name, lambda cur: machine.apply(
        cur, event, now, f"by <@{request.user}>") if cur else None)
    assert changed is not None
    if changed.channel and changed.thread_ts:
        ctx.notifier.reply(changed.channel, changed.thread_ts,
                           traffic_text.paused_or_resumed(event.value, request.user,
                                                          changed.weight))
    record(ctx, request, "done", channel=changed.channel, ts=changed.thread_ts)
    return f"{view.name}: {changed.phase.value}"


def _approved_step(ctx: JobContext, request: Request, view: ServiceView,
                   current: Rollout) -> str:
    """The next step of a rollout that waited for approval, now that approvers said yes."""
    now = time.time()
    if request.command.dry_run:
        next_step = machine.apply(current, Event.APPROVED, now, "approved")
        return show_plan(ctx, request, plan_weights(
            ctx, view, next_step.subsets, Weights.canary_at(next_step.weight),
            (plan_text.rollout_state(view.name, current.phase.value, next_step.phase.value,
                                     next_step.weight),)))
    if not request.approved_by:
        raise Refused(f"{view.name}'s next step waits for approval: approvers react on the "
                      "request posted in the channel")
    approvers = ", ".join(f"<@{a}>" for a in request.approved_by)
    ctx.store.mark_unapplied(view.name, now, writer())

    def approve(cur: Rollout | None) -> Rollout | None:
        if cur is None or cur.id != current.id or cur.phase is not Phase.AWAITING_APPROVAL:
            return None
        not_overtaken(ctx, request, cur.channel, cur.thread_ts)
        return machine.apply(cur, Event.APPROVED, now, f"approved by {approvers}")

    with refused_before_commit(ctx, view.name):
        moved = ctx.store.update(view.name, approve, watch=COMMIT_WATCH)
        if moved is None or moved.phase is Phase.AWAITING_APPROVAL:
            raise Refused(f"{view.name} changed while approvers were asked; nothing was applied")
    before, after = apply_weight(ctx, view, moved, Weights.canary_at(moved.weight))
    undo_if_overtaken(ctx, request, view, moved, moved.channel, moved.thread_ts)
    ctx.store.mark_applied(view.name, writer())
    if moved.channel and moved.thread_ts:
        ctx.notifier.reply(moved.channel, moved.thread_ts, traffic_text.step_advanced(
            moved.step_index, len(moved.steps), moved.weight, [f"approved by {approvers}"]))
    record(ctx, request, "done", before=before, after=after, channel=moved.channel,
           ts=moved.thread_ts)
    return f"{view.name}: {after}"


def status(ctx: JobContext, request: Request) -> str:
    view = service_view(ctx, request)
    subsets = subsets_of(ctx, view)
    weights = live_weights(ctx.kube, view.namespace, view.virtual_services[0], view.name,
                           subsets)
    current = ctx.store.get(view.name)
    text = traffic_text.status(view.name, view.namespace, pair(weights), names(subsets),
                           traffic_text.rollout_lines(current) if current else [])
    now = time.time()
    start = current.history[0].at if current and current.history else now - LINK_SPAN_S
    links = links_text(ctx, view, start - LINK_LEAD_S, now)
    text = "\n".join(line for line in (text, links) if line)
    ctx.notifier.post_root(request.channel, text)
    return text
