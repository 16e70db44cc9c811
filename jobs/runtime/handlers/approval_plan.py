"""What an approval request says will change, and the facts it was made under. Reads the cluster.

Before any of it, what the handler would refuse anyway (a rollout in the way, no SLO evidence
to promote on yet, a missing VirtualService, no ready canary pods, …) is refused here with the
handler's own words: approvers are never asked for work that would then be refused.

The request shows what will be written, field by field: the handler's own dry run computes it
(``common.plan_of``), the very plan the approved job writes from. That plan is one of the facts:
the job computes it again when it runs, so if the objects changed meanwhile in a way that changes
what would be written (a field's value before, a field or an object more or less), approvers said
yes to something else, and the request is voided, saying what changed, instead of run. A change
of other fields, or of the server's bookkeeping, does not void it; nor does a plan the handler
would now refuse to make: the job runs and refuses in its own words (its approvals not used).

The other facts (current weights, the service's rollout, the lock or the freeze being lifted)
are read again at quorum too, with the same effect.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass

from jobs.adapters.backup_store import BackupStore
from jobs.adapters.locks import Locks
from jobs.domain.routes import Weights
from jobs.runtime.context import JobContext
from jobs.runtime.handlers.backup import require_namespace
from jobs.runtime.handlers.bluegreen import is_cutover
from jobs.runtime.handlers.bluegreen import precheck as precheck_bluegreen
from jobs.runtime.handlers.canary import precheck_canary, precheck_promote, running
from jobs.runtime.handlers.common import Handler, names, pair, plan_of, plans_dry_run, subsets_of
from jobs.runtime.weights import live_weights, preflight
from meshbot.commands import Request, Verb
from meshbot.errors import MeshbotError, Refused
from meshbot.plan import Plan as WritePlan
from meshbot.verbs import spec
from policies.decide import BLUEGREEN_STEP
from policies.views import ServiceView
from rendering import admin as admin_text
from rendering import approvals as approval_text
from rendering import common as words
from rendering import plan as plan_text
from rendering import runbook as runbook_text
from rendering import sidecars as sidecar_text


@dataclass(frozen=True)
class Plan:
    text: str
    facts: dict[str, str]
    thread_link: str | None = None


def compose(ctx: JobContext, request: Request) -> Plan:
    """The plan for ``request``; ``Refused`` when there is nothing to approve (no lock, …)."""
    command = request.command
    if command.verb is Verb.UNLOCK:
        lock = Locks(ctx.redis).get(command.target or "")
        if lock is None:
            raise Refused(admin_text.not_locked(command.target or ""))
        return Plan(approval_text.plan_unlock(lock.service, lock.user, lock.what, lock.since),
                    facts_now(ctx, request))
    if command.verb is Verb.FREEZE:
        freeze = Locks(ctx.redis).freeze()
        if freeze is None:
            raise Refused(admin_text.no_freeze())
        return Plan(approval_text.plan_freeze_off(freeze.user, freeze.since),
                    facts_now(ctx, request))
    view = ctx.policy.service(command.target) if command.target else None
    if view is None:
        _namespace_refusals(ctx, request)
        written = write_plan(ctx, request)
        return Plan(_with(approval_text.plan_namespace(command), written),
                    facts_now(ctx, request, written))
    _service_refusals(ctx, request, view)
    written = write_plan(ctx, request)
    return Plan(_with(_service_plan(ctx, request, view), written),
                facts_now(ctx, request, written), _thread_link(ctx, view.name))


def _planner(request: Request) -> Handler | None:
    """The verb's handler if it computes its plan (the registry names it; imported here, not
    above, since the handlers' modules import this one's callers)."""
    path = spec(request.command.verb).handler
    if not path:
        return None
    module, _, name = path.partition(":")
    handler: Handler = getattr(importlib.import_module(module), name)
    return handler if plans_dry_run(handler) else None


def write_plan(ctx: JobContext, request: Request) -> WritePlan | None:
    """What the approved job will write, by its handler's own dry run; ``Refused`` as it would
    refuse. None for a verb whose handler does not plan."""
    handler = _planner(request)
    return None if handler is None else plan_of(handler, ctx, request)


def _with(text: str, written: WritePlan | None) -> str:
    return text if written is None else f"{text}\n{plan_text.approval_plan(written)}"


def _plan_fact(ctx: JobContext, request: Request, written: WritePlan | None,
               was: Mapping[str, str] | None) -> dict[str, str]:
    if written is None:
        try:
            written = write_plan(ctx, request)
        except MeshbotError:
            # Not another plan: the job runs, refuses in its own words, and the request says
            # its approvals were not used.
            return {"plan": was["plan"]} if was and "plan" in was else {}
    return {} if written is None else {"plan": plan_text.plan_summary(written)}


def _namespace_refusals(ctx: JobContext, request: Request) -> None:
    """What the handler would refuse anyway is refused before approvers are asked, with the
    handler's own words."""
    command = request.command
    target = command.target or ""
    if command.verb is Verb.RESTORE:
        if BackupStore(ctx.redis).get(target) is None:
            raise Refused(runbook_text.unknown_backup(target))
        return
    own = target == ctx.settings.namespace
    if command.verb is Verb.EMERGENCY and own:
        raise Refused(runbook_text.emergency_own_namespace(target))
    if command.verb is Verb.INJECT_NAMESPACE and own:
        raise Refused(sidecar_text.own_namespace(target, "injected"))
    if command.verb is Verb.MTLS and own and command.switch == "strict":
        raise Refused(sidecar_text.own_namespace(target, "switched to STRICT mTLS"))
    if command.verb in (Verb.EMERGENCY, Verb.MTLS, Verb.INJECT_NAMESPACE):
        require_namespace(ctx, target)


def _service_refusals(ctx: JobContext, request: Request, view: ServiceView) -> None:
    """The service verbs' own preconditions on the rollout, in their handlers' words."""
    command = request.command
    if command.verb is Verb.CANARY and command.percent is not None:
        precheck_canary(ctx, view, command.percent)
    elif command.verb is Verb.PROMOTE:
        precheck_promote(ctx, view)
    elif command.verb is Verb.BLUEGREEN:
        precheck_bluegreen(ctx, view, request)


def _service_plan(ctx: JobContext, request: Request, view: ServiceView) -> str:
    subsets = subsets_of(ctx, view)
    command = request.command
    if command.verb is Verb.BLUEGREEN and not is_cutover(request):  # its start: 90/10
        target = Weights.canary_at(BLUEGREEN_STEP)
        before = preflight(ctx.kube, view.namespace, view.virtual_services, view.name, subsets,
                           target, allow_gitops=view.gitops_allowed)
    elif command.verb is Verb.CANARY and command.percent is not None:
        current = running(ctx, view)  # a running canary moves: its subsets, its weights now
        if current is not None:
            subsets = current.subsets
        target = Weights.canary_at(command.percent)
        # Every check the change itself makes (GitOps owner, managed route, ready canary pods),
        # so approvers are not asked for something that would be refused anyway.
        before = preflight(ctx.kube, view.namespace, view.virtual_services, view.name, subsets,
                           target, allow_gitops=view.gitops_allowed)
    elif command.verb in (Verb.PROMOTE, Verb.BLUEGREEN):
        rollout = ctx.store.get(view.name)
        if rollout is not None and not rollout.phase.terminal:
            subsets = rollout.subsets
        target = Weights(stable=0, canary=100)
        # The promote's own write checks too (GitOps owner, managed route, ready canary pods).
        before = preflight(ctx.kube, view.namespace, view.virtual_services, view.name, subsets,
                           target, allow_gitops=view.gitops_allowed)
    else:
        return f"`{words.describe(command)}` on `{view.name}` ({view.namespace})"
    return approval_text.plan_weights(view.name, view.namespace, pair(before), pair(target),
                                 names(subsets))


def _weights(ctx: JobContext, view: ServiceView) -> Weights:
    return live_weights(ctx.kube, view.namespace, view.virtual_services[0], view.name,
                        subsets_of(ctx, view))


def facts_now(ctx: JobContext, request: Request, written: WritePlan | None = None, *,
              was: Mapping[str, str] | None = None) -> dict[str, str]:
    """The facts the request depends on, as they are now (``written``: its plan, if just
    computed; ``was``: the facts it was posted under, at quorum)."""
    command = request.command
    target = command.target or ""
    if command.verb is Verb.UNLOCK:
        lock = Locks(ctx.redis).get(target)
        held = (f"held by {words.who(lock.user)} for `{lock.what}` since "
                f"{words.when(lock.since)}") if lock else "not locked"
        return {"lock": held}
    if command.verb is Verb.FREEZE:
        freeze = Locks(ctx.redis).freeze()
        return {"freeze": (f"set by {words.who(freeze.user)} since "
                           f"{words.when(freeze.since)}") if freeze else "off"}
    view = ctx.policy.service(target) if target else None
    if view is None:
        return _plan_fact(ctx, request, written, was)
    rollout = ctx.store.get(view.name)
    if rollout is None:
        state = "none"
    else:
        started = rollout.history[0].at if rollout.history else 0.0
        # Liveness, not the exact phase: holding ↔ progressing must not void a promote.
        phase = "in progress" if not rollout.phase.terminal else rollout.phase.value
        state = (f"{phase}, started by {words.who(rollout.requested_by)} "
                 f"{words.when(started)}")
    return {"weights": str(_weights(ctx, view)), "rollout": state,
            **_plan_fact(ctx, request, written, was)}


def _thread_link(ctx: JobContext, service: str) -> str | None:
    rollout = ctx.store.get(service)
    if rollout is None or rollout.phase.terminal or not (rollout.channel and rollout.thread_ts):
        return None
    return ctx.notifier.link(rollout.channel, rollout.thread_ts)
