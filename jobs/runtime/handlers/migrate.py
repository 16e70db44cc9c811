"""``/mesh migrate <namespace> [phase=1..5|all] [force=yes] [dry-run]`` and
``/mesh migrate <namespace> pause|resume|abort``.

Starting checks everything that would refuse the migration before anything is written (the
namespace, meshbot's own, services without Deployments or Deployments without an ``app``
label, GitOps owners, a migration already running, a critical service mid-rollout), posts the
plan as the thread's root and the objects it would write, and — unless it is a dry run —
stores the workflow; the ticker (``jobs.runtime.migration``) carries it out. The controls only
change the workflow's record; the engine acts on it at its next step.
"""

from __future__ import annotations

import contextlib
import time
import uuid

from jobs.adapters.migration_store import AlreadyRunning, MigrationStore
from jobs.domain import migration as model
from jobs.domain import migration_bodies as bodies
from jobs.domain.gitops import ensure_not_gitops_owned
from jobs.domain.migration import Status, Workflow
from jobs.runtime import migration_plan
from jobs.runtime.context import JobContext
from jobs.runtime.handlers.backup import require_namespace
from jobs.runtime.handlers.common import plans, record, request_thread, show_plan
from jobs.runtime.handlers.sidecars import plan_tls
from jobs.runtime.migration import show, status_text
from jobs.runtime.migration_run import APPROVE, Run
from jobs.runtime.reports import report
from meshbot.commands import Request
from meshbot.errors import MeshNotFound, Refused
from meshbot.plan import Plan
from rendering import migrate as words
from rendering.common import duration, people
from rendering.plan import plan_block

CONTROLS = {"pause": ((Status.RUNNING,), Status.PAUSED),
            "resume": ((Status.PAUSED,), Status.RUNNING),
            "abort": ((Status.RUNNING, Status.PAUSED), Status.ABORTING)}


@plans
def migrate(ctx: JobContext, request: Request) -> str:
    switch = request.command.switch or "start"
    if switch == APPROVE and request.command.dry_run:
        return step_plan(ctx, request)
    if switch == APPROVE:
        return approved(ctx, request)
    if switch in CONTROLS:
        return control(ctx, request, switch)
    return start(ctx, request)


def services_in(ctx: JobContext, namespace: str) -> dict[str, str]:
    """The policy's services living in ``namespace``: name → tier."""
    return {name: view.tier for name in ctx.policy.service_names
            if (view := ctx.policy.service(name)) is not None and view.namespace == namespace}


def _check(run: Run, services: dict[str, str], phases: tuple[int, ...],
           tiers: dict[str, list[str]]) -> None:
    """Everything that refuses the migration, before anything is posted or written."""
    ctx, ns = run.ctx, run.namespace
    unlabelled = [d["metadata"]["name"] for d in ctx.kube.list_deployments(ns)
                  if "app" not in (d["metadata"].get("labels") or {})]
    if unlabelled:
        raise Refused(words.no_app_label(ns, sorted(unlabelled)))
    for phase in phases:
        for service in tiers.get(model.TIER_OF_PHASE.get(phase, ""), ()):
            found = ctx.kube.find_deployments(ns, {"app": service})
            if not found:
                raise Refused(words.no_deployments(service, ns))
            for deployment in found:
                ensure_not_gitops_owned(deployment, allowed=run.view(service).gitops_allowed)
    if 5 in phases:
        allowed = ctx.policy.gitops_allowed
        ensure_not_gitops_owned(ctx.kube.get_namespace(ns), allowed=allowed)
        with contextlib.suppress(MeshNotFound):  # none yet: phase 5 creates it
            ensure_not_gitops_owned(ctx.kube.get_peer_authentication(ns, "default"),
                                    allowed=allowed)
        for rule in plan_tls(ctx.kube.list_destination_rules(ns))[0]:
            ensure_not_gitops_owned(rule, allowed=allowed)
        with contextlib.suppress(MeshNotFound):  # none yet: phase 5 creates it
            ensure_not_gitops_owned(run.work.get_custom(
                "telemetry.istio.io", "v1", "telemetries", ns, bodies.telemetry_name(ns)),
                allowed=allowed)


def start(ctx: JobContext, request: Request) -> str:
    command = request.command
    ns = command.target or ""
    if ns == ctx.settings.namespace:
        raise Refused(words.own_namespace(ns))
    require_namespace(ctx, ns)
    services = services_in(ctx, ns)
    if not services:
        raise Refused(words.no_services(ns))
    store = MigrationStore(ctx.redis)
    current = store.get(ns)
    if current is not None and current.status.active and current.request_id != request.id:
        raise Refused(words.already_running(ns, current.requester, current.status.value))
    phases = model.parse_phases(command.options.get("phase"))
    force = command.options.get("force") == "yes"
    tiers = model.tier_services(services)
    draft = Workflow(id=uuid.uuid4().hex[:12], namespace=ns, request_id=request.id,
                     requester=request.user, channel=request.channel, phases=phases,
                     force=force, steps=model.build_steps(phases, tiers),
                     started_at=time.time())
    run = Run(ctx, draft)
    _check(run, services, phases, tiers)
    plan = migration_plan.build(run, phases, tiers)  # refuses a critical service mid-rollout
    settings = ctx.policy.migrate
    root = words.plan_root(
        ns, request.user, phases,
        {p: tiers.get(t, []) for p, t in model.TIER_OF_PHASE.items()},
        migration_plan.approvals(run, phases, tiers, force),
        {"watch": duration(settings.watch), "critical_watch": duration(settings.critical_watch),
         "threshold": settings.error_threshold,
         "providers": ", ".join(ctx.policy.telemetry.providers.metrics
                                + ctx.policy.telemetry.providers.tracing
                                + ctx.policy.telemetry.providers.access_logging)},
        command.dry_run, [s for s, t in services.items() if t not in model.TIER_OF_PHASE.values()])
    ts = request_thread(ctx, request, request.channel, root)
    if current is None or current.request_id != request.id:
        for title, part in plan:
            ctx.notifier.reply(request.channel, ts, f"*{title}*\n{plan_block(part)}")
    changes = sum(len(part.effective) for _, part in plan)
    if command.dry_run:
        record(ctx, request, "dry-run", channel=request.channel, ts=ts,
               detail=f"{changes} objects would change")
        return f"dry run: {changes} objects"
    if current is None or current.request_id != request.id:
        try:
            store.create(draft.model_copy(update={"thread_ts": ts}))
        except AlreadyRunning as exc:  # started by someone else since the check above
            raise Refused(words.already_running(ns, exc.workflow.requester,
                                                exc.workflow.status.value)) from None
    workflow = store.get(ns)
    assert workflow is not None
    if not workflow.status_ts:
        status_ts = ctx.notifier.reply(request.channel, ts, status_text(workflow))
        # The ticker may move the workflow on while Slack answers: the ts is set on what is
        # there by then, or the status message would never be edited again.
        workflow = _update(store, ns, lambda current: None if current.status_ts else
                           current.model_copy(update={"status_ts": status_ts})) \
            or store.get(ns) or workflow
    record(ctx, request, "started", channel=request.channel, ts=ts,
           detail=f"phases {', '.join(map(str, phases))}; {len(workflow.steps)} steps")
    return f"{ns}: migration started ({len(workflow.steps)} steps)"


def _update(store: MigrationStore, namespace: str, change: object) -> Workflow | None:
    """Apply ``change`` (record → record, or None: refused) by compare-and-set, retried."""
    assert callable(change)
    for _ in range(20):
        current = store.get(namespace)
        if current is None:
            return None
        wanted = change(current)
        if wanted is None:
            return None
        saved = store.save(wanted)
        if saved is not None:
            return saved
    raise Refused(f"the migration of `{namespace}` kept changing; try again")


def control(ctx: JobContext, request: Request, action: str) -> str:
    ns = request.command.target or ""
    store = MigrationStore(ctx.redis)
    current = store.get(ns)
    # Changed already by this request's first attempt, whose worker then died?
    ours = current is not None and current.control_by == request.id
    saved = current if ours else _control(store, ns, request, action, current)
    if saved is None:
        return f"dry run: would {action}"
    # Said after the change: Slack away must not fail the job, whose retry would find the
    # workflow already paused (or resumed, or aborting) and refuse it.
    report(ctx, saved.channel, saved.thread_ts, words.control(ns, action, request.user))
    show(ctx, saved)
    record(ctx, request, action, detail=f"{saved.control_from} → {CONTROLS[action][1].value}")
    return f"{ns}: {saved.status.value}"


def _control(store: MigrationStore, ns: str, request: Request, action: str,
             current: Workflow | None) -> Workflow | None:
    """The workflow paused, resumed or aborted by ``request``; None for a dry run."""
    if current is None or not current.status.active:
        raise Refused(words.not_running(ns))
    allowed, target = CONTROLS[action]
    if current.status not in allowed:
        raise Refused(words.cannot(ns, {"pause": "paused", "resume": "resumed",
                                        "abort": "aborted"}[action], current.status.value))
    if request.command.dry_run:
        return None

    def change(wf: Workflow) -> Workflow | None:
        if wf.status not in allowed:
            return None
        return wf.model_copy(update={"status": target, "control_by": request.id,
                                     "control_from": wf.status.value})

    saved = _update(store, ns, change)
    if saved is None:
        raise Refused(words.cannot(ns, action + "d", current.status.value))
    return saved


def step_plan(ctx: JobContext, request: Request) -> str:
    """What the step an approval request is for will write: the approvers see it, and it is
    one of the facts re-checked at quorum (``handlers.approval_plan``)."""
    ns = request.command.target or ""
    workflow = MigrationStore(ctx.redis).get(ns)
    key = request.command.options.get("step", "")
    step = next((s for s in workflow.steps if s.key == key), None) if workflow else None
    if workflow is None or step is None:
        raise Refused(f"no step of a running migration of `{ns}` waits for this approval")
    run = Run(ctx, workflow)
    if step.phase == 5:
        plan = Plan(tuple(migration_plan.finalize(run)))
    elif step.phase == 4 and step.service:
        plan = Plan(tuple(migration_plan.cutover(run, step.service)))
    else:
        plan = Plan(steps=("the migration goes on past the failing readiness checks",))
    return show_plan(ctx, request, plan)


def approved(ctx: JobContext, request: Request) -> str:
    """The approvals a step asked for (``migration_run.need_approval``) are in: note them."""
    ns = request.command.target or ""
    key = request.command.options.get("step", "")
    store = MigrationStore(ctx.redis)

    def change(wf: Workflow) -> Workflow | None:
        step = next((s for s in wf.steps if s.key == key), None)
        if not wf.status.active or step is None:
            return None
        memo = wf.remembered(step)
        if memo.get("request") != request.id or \
                len(request.approved_by) < int(memo.get("count") or 1):
            return None
        return wf.model_copy(update={"approvals": {**wf.approvals, key: request.approved_by}})

    saved = _update(store, ns, change)
    if saved is None:
        raise Refused(f"no step of a running migration of `{ns}` waits for this approval")
    report(ctx, saved.channel, saved.thread_ts, f"Approved by {people(request.approved_by)}: "
           f"{request.command.options.get('what', key)}")
    record(ctx, request, "approved", detail=f"step {key}")
    return f"{ns}: {key} approved"
