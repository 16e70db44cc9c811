"""The migration workflows' engine: the ticker's duty that moves every active workflow on.

For each namespace with an active workflow, under its lease: read the record, run the step at
its cursor, and write the outcome back only if the record is still the one read (a pause or an
abort typed meanwhile wins, and the step runs again under the new state). A step that is done
moves the cursor and the next runs at once; one that waits is asked again on a later tick.
A worker killed mid-step leaves the lease to expire and the record at that step: the next
ticker runs it again, and every step is safe to run twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from jobs.adapters.locks import Locks
from jobs.adapters.migration_store import MigrationStore
from jobs.adapters.prometheus import MetricsSource
from jobs.domain import migration as model
from jobs.domain.migration import Status, Step, Workflow
from jobs.runtime import migration_bluegreen as phase4
from jobs.runtime import migration_phases as phases
from jobs.runtime.context import JobContext
from jobs.runtime.migration_run import Again, Done, Outcome, Run, Stop, Wait
from meshbot.errors import MeshbotError, UserError
from rendering import approvals as approval_text
from rendering import migrate as words

log = logging.getLogger("meshbot.migration")

LEASE_MS = 5000
MAX_STEPS_PER_TICK = 50
StepFn = Callable[[Run, Step], Outcome]

STEPS: dict[tuple[int, str], StepFn] = {
    (1, "gate"): phases.gate,
    (2, "inject"): phases.inject, (2, "rollout"): phases.rollout, (2, "pods"): phases.pods,
    (3, "inject"): phases.inject, (3, "rollout"): phases.rollout, (3, "watch"): phases.watch,
    **{(4, kind): fn for kind, fn in phase4.STEPS.items()},
    (5, "approve"): phases.approve_finalize, (5, "label"): phases.label, (5, "tls"): phases.tls,
    (5, "strict"): phases.strict, (5, "telemetry"): phases.telemetry,
}
WATCHES: dict[int, Callable[..., Outcome]] = {3: phases.watch, 4: phase4.watch}


def advance_all(ctx: JobContext, source: MetricsSource | None, owner: str | None = None,
                now: float | None = None) -> int:
    """Move every active workflow on; how many steps were completed."""
    owner = owner or uuid.uuid4().hex
    store = MigrationStore(ctx.redis)
    done = 0
    for namespace in store.active():
        try:
            done += advance(ctx, namespace, source, owner, now)
        except MeshbotError as exc:  # a state of the world: the next tick tries again
            log.warning("migration of %s: %s", namespace, exc.message)
    return done


def advance(ctx: JobContext, namespace: str, source: MetricsSource | None, owner: str,
            now: float | None = None) -> int:
    store = MigrationStore(ctx.redis)
    done = 0
    try:
        for _ in range(MAX_STEPS_PER_TICK):
            if not store.lease(namespace, owner, LEASE_MS):
                return done  # another worker is on it
            workflow = store.get(namespace)
            if workflow is None or not workflow.status.active:
                return done
            run = Run(ctx, workflow, source, time.time() if now is None else now)
            try:
                outcome = one(run)
            except UserError as exc:  # the cluster refuses what the step needs: stop, say why
                outcome = Stop(exc.message)
            saved = store.save(settle(run, outcome))
            if saved is None:
                continue  # a pause or an abort came in: run again under it
            show(ctx, saved)
            if saved.status is not Status.RUNNING and saved.status is not Status.ABORTING:
                return done
            if not isinstance(outcome, Done | Again):
                return done
            done += isinstance(outcome, Done)
    finally:
        store.release(namespace, owner)
    return done


def one(run: Run) -> Outcome:
    workflow = run.workflow
    step = workflow.step
    if workflow.status is Status.ABORTING:
        return abort_step(run)
    if step is None:
        return Done()
    # A change freeze holds the workflow as a pause does; putting back is never held.
    frozen = Locks(run.ctx.redis).freeze()
    if workflow.status is Status.PAUSED or frozen is not None:
        held = "paused" if frozen is None else approval_text.waiting_frozen(frozen.user,
                                                                            frozen.since)
        # A held watch still guards: a breach is put back at once, but the watch never ends.
        if step.kind in model.WATCHES and step.phase in WATCHES:
            outcome = WATCHES[step.phase](run, step, may_finish=False)
            return outcome if isinstance(outcome, Stop | Again) else Wait(held)
        return Wait(held)
    return STEPS[(step.phase, step.kind)](run, step)


def abort_step(run: Run) -> Outcome:
    """Leave every service migrated or as it was: the one in flight is put back, or finished
    when it is past its cut-over (blue may already be gone)."""
    workflow = run.workflow
    step = workflow.step
    service = model.in_flight(workflow)
    if step is None or service is None:
        return Stop(words.aborted(workflow.namespace, "no service was left half-way"))
    if step.phase == 4 and model.past_cutover(workflow, workflow.cursor):
        return STEPS[(step.phase, step.kind)](run, step)
    if step.phase == 4:
        phase4.put_back(run, service)
        detail = f"`{service}` put back as it was (all traffic on blue, green removed)"
    else:
        restored = phases.restore_templates(run, service, step.phase)
        detail = (f"`{service}` put back as it was (pod templates restored on "
                  f"{', '.join(restored) or 'nothing: none was changed yet'})")
    run.say(words.aborted(workflow.namespace, detail))
    return Stop(detail)


def settle(run: Run, outcome: Outcome) -> Workflow:
    """The record after ``outcome``."""
    workflow = run.workflow.model_copy(update={"updated_at": run.now})
    step = workflow.step
    if isinstance(outcome, Again):
        return workflow
    if isinstance(outcome, Wait):
        return workflow.model_copy(update={"note": outcome.note})
    aborting = workflow.status is Status.ABORTING
    if isinstance(outcome, Stop):
        status = Status.ABORTED if aborting else Status.STOPPED
        return workflow.model_copy(update={"status": status, "note": outcome.note})
    if step is None:
        return workflow.model_copy(update={"status": Status.DONE, "note": ""})
    workflow = workflow.remember(step, done=True)
    cursor = workflow.cursor + 1
    update: dict[str, object] = {"cursor": cursor, "note": outcome.note}
    if cursor >= len(workflow.steps):
        update["status"] = Status.ABORTED if aborting else Status.DONE
        run.say(words.finished(workflow.namespace, run.now - workflow.started_at))
    elif aborting and step.service and workflow.steps[cursor].service != step.service:
        update["status"] = Status.ABORTED  # the service past its cut-over is finished
        update["note"] = f"`{step.service}` finished (past its cut-over), then stopped"
        run.say(words.aborted(workflow.namespace, str(update["note"])))
    return workflow.model_copy(update=update)


def status_text(workflow: Workflow) -> str:
    step = workflow.step
    return words.status(
        workflow.namespace, workflow.status.value, step.phase if step else None,
        model.PHASE_NAMES.get(step.phase, "") if step else "", step.service if step else None,
        step.kind if step else None, workflow.cursor, len(workflow.steps), workflow.last,
        workflow.note)


def show(ctx: JobContext, workflow: Workflow) -> None:
    """The one status message, edited in place; Slack failing is logged, the record stands."""
    if not workflow.status_ts:
        return
    try:
        ctx.notifier.update(workflow.channel, workflow.status_ts, status_text(workflow))
        # Paced like every update; the last state of a workflow is waited for, not held.
        ctx.notifier.flush(wait=not workflow.status.active)
    except MeshbotError as exc:
        log.warning("migration status of %s not updated: %s", workflow.namespace, exc.message)
