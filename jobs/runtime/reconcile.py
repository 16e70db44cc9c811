"""Settle a service whose rollout state says weights the VirtualService may not show, because
the writer that decided them ended before writing them.

Every writer marks the service (with itself as owner: an RQ job id, or the tick) before it
commits the new state, and clears the mark after its write. Past a grace period the ticker looks
at a mark that is still there:
- its job is still alive (queued, scheduled for a retry, started, or taken over from a dead
  worker): left alone — the job finishes its own work, whatever its retry schedule;
- the tick's own mark (the ticker died between committing a transition and writing it), or a
  rollback's: the decided weights are written, as decided (said and audited only if a write
  was needed: a mesh that shows them already is left as it is, silently);
- a job that ended without writing (it gave up, or was refused after marking): nothing it
  decided is written; the rollout is rolled back to the live subset instead — the safe end
  state — so the rollout's phase, the thread, the audit and the mesh all say the same thing.
A write that cannot succeed (a permanent error: a 403, a 422) is never retried: the rollout is
paused at the weights the VirtualService still has (read back), the refusal is audited and said
in the thread, once (``stop_unwritable``; the analysis's own writes end there too), so the
phase, the audit, the thread and the mesh agree, and nothing is tried until someone acts.
"""

from __future__ import annotations

import logging
import time

from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs.adapters.audit import AuditEntry
from jobs.adapters.rollout_store import TICK_OWNER
from jobs.domain import rollout as machine
from jobs.domain.rollout import MAX_HISTORY, Event, Phase, Rollout, Transition
from jobs.domain.routes import Weights
from jobs.runtime.context import JobContext
from jobs.runtime.reports import report
from jobs.runtime.route_edits import back_to_stable
from jobs.runtime.weights import live_weights, set_weights
from meshbot.errors import (
    MeshbotError,
    MeshConflict,
    MeshUnavailable,
    PermanentError,
    TemporaryError,
)
from policies.views import ServiceView
from rendering import common as words
from rendering import traffic as traffic_text

log = logging.getLogger("meshbot.reconcile")

GRACE_S = 5.0  # a live job is never touched; this only spares a writer between two calls
READ_BACK_RETRY_S = 10.0  # a refused write whose weights could not be read back: looked at again
ALIVE = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.DEFERRED}


def desired(rollout: Rollout) -> Weights:
    if rollout.phase in (Phase.ROLLED_BACK, Phase.CANCELLED):
        return Weights(stable=100, canary=0)
    if rollout.phase is Phase.PROMOTED:
        return Weights(stable=0, canary=100)
    return Weights.canary_at(rollout.weight)


def _job_status(ctx: JobContext, owner: str) -> JobStatus | None:
    try:
        job = Job.fetch(owner, connection=ctx.redis, serializer=JSONSerializer)
    except NoSuchJobError:
        return None
    return job.get_status(refresh=False)


def reconcile(ctx: JobContext, now: float | None = None) -> list[str]:
    """Settle every service whose writer is gone; which ones were written."""
    now = time.time() if now is None else now
    done = []
    for service in ctx.store.unapplied_since(now - GRACE_S):
        owner = ctx.store.unapplied_owner(service)
        status = None if owner == TICK_OWNER else _job_status(ctx, owner)
        if status in ALIVE:
            continue  # its own job (or its retry, or its taker-over) will write it
        rollout = ctx.store.get(service)
        view = ctx.policy.service(service)
        if rollout is None or view is None:
            ctx.store.mark_applied(service, owner)
            continue
        ended_unwritten = owner != TICK_OWNER and rollout.phase is not Phase.ROLLED_BACK
        if ended_unwritten:
            settled = _roll_back(ctx, rollout, now, status, owner)
            if settled is None:
                continue
            rollout = settled
        # What happened, not the phase, chooses the words: a rollback the reconcile decided for
        # this owner's unwritten change (on an earlier tick, whose write failed) is still that
        # settle; only a writer that decided the rollback itself (a rollback's job, the tick)
        # stopped before writing its weights.
        settles = owner != TICK_OWNER and rollout.settled_for == owner
        target = desired(rollout)
        try:
            if rollout.phase is Phase.ROLLED_BACK:
                was, now_at, cleared = back_to_stable(ctx, view, rollout.subsets)
                wrote = was != now_at or bool(cleared)
            else:
                was, now_at = set_weights(ctx.kube, view.namespace, view.virtual_services,
                                          view.name, rollout.subsets, target,
                                          allow_gitops=view.gitops_allowed)
                wrote = was != now_at
        except PermanentError as exc:  # retrying cannot help: say so once, stop trying
            log.error("could not write %s for %s: %s", target, service, exc.message)
            rolling_back = rollout.phase in (Phase.ROLLED_BACK, Phase.CANCELLED)
            stop_unwritable(ctx, view, rollout, exc, target=target, owner=owner, now=now,
                            action="reconcile", request_id=f"reconcile:{owner}:{int(now)}",
                            decided_words=_decided(rollout, target, rolling_back))
            continue
        except MeshbotError as exc:  # tried again on a later tick
            log.warning("could not re-apply %s for %s: %s", target, service, exc.message)
            defer(ctx, service, owner, exc, now)
            continue
        ctx.store.mark_applied(service, owner)
        if not (wrote or settles):
            # The mesh showed the decided weights already (the writer, or a rollback after
            # it, got there): nothing was written, nothing changed, so nothing is said.
            log.info("%s: already at %s; the mark of %s cleared", service, target, owner)
            continue
        done.append(service)
        text = (traffic_text.settled_after_failure(str(target)) if settles
                else traffic_text.reapplied(str(target)))
        _tell(ctx, rollout, text)
        ctx.audit.record(AuditEntry(
            actor="meshbot", action="reconcile", target=service, outcome="done",
            request_id=f"reconcile:{owner}:{int(now)}", after=str(target), detail=text))
    return done


def defer(ctx: JobContext, service: str, owner: str, error: MeshbotError, now: float) -> None:
    """A write the Kubernetes API asked to have retried later (``TemporaryError.delay``, e.g.
    its ``Retry-After``) is not tried again by the reconcile before that: its mark is dated so
    the grace period ends when the wait does. Only the Kubernetes API's wait counts: Slack
    asking to wait after the write landed must not keep the service's analysis waiting."""
    if isinstance(error, MeshUnavailable | MeshConflict) and error.delay > 0:
        ctx.store.defer_unapplied(service, owner, now + error.delay - GRACE_S)


def _roll_back(ctx: JobContext, rollout: Rollout, now: float,
               status: JobStatus | None, owner: str) -> Rollout | None:
    """The rollout's state, rolled back because its writer (``owner``) ended without writing;
    the state records that it was settled for that writer."""
    why = f"the change was not written (its job {status.value if status else 'is gone'})"

    def change(current: Rollout | None) -> Rollout | None:
        if current is None or current.id != rollout.id or current.phase is Phase.ROLLED_BACK:
            return None
        return machine.apply(current, Event.ROLLBACK, now, why).model_copy(
            update={"settled_for": owner})
    try:
        return ctx.store.update(rollout.service, change) or ctx.store.get(rollout.service)
    except MeshbotError as exc:
        log.warning("could not settle %s: %s", rollout.service, exc.message)
        return None


def _tell(ctx: JobContext, rollout: Rollout, text: str) -> None:
    if not (rollout.channel and rollout.thread_ts):
        return
    try:
        report(ctx, rollout.channel, rollout.thread_ts, text)
    except MeshbotError as exc:
        log.warning("%s: not reported in Slack: %s", rollout.service, exc.message)


class Unwritable(Exception):
    """A weight write refused for good (``error``) while a decision was being carried out."""

    def __init__(self, error: PermanentError) -> None:
        super().__init__(error.message)
        self.error = error


def _decided(rollout: Rollout, target: Weights, rolling_back: bool) -> str:
    shown = words.weights(target.stable, target.canary, rollout.stable_subset,
                          rollout.canary_subset)
    return f"the rollback to {shown}" if rolling_back else shown


def stop_unwritable(ctx: JobContext, view: ServiceView, decided: Rollout, error: PermanentError,
                    *, target: Weights, owner: str, now: float, action: str, request_id: str,
                    decided_words: str | None = None,
                    back_to: Rollout | None = None) -> Rollout | None:
    """``decided`` (the rollout as committed) wanted ``target`` written (``decided_words``: how
    the thread names it) and the Kubernetes API refused it for good: nothing will be tried
    again on its own. The rollout is paused at the weights the VirtualService has (read back;
    ``back_to``: the state before the decision, whose step it keeps), the owner's mark
    cleared, the refusal audited as ``action`` "failed" and said in the rollout's thread. The
    paused rollout; None when it changed meanwhile, or when the weights could not be read back:
    then nothing is said, audited or paused yet — a phase that names weights the mesh may not
    have would disagree with it — and the mark stays, dated so that the reconcile tries again
    (and meets the same refusal, and reads back) once ``READ_BACK_RETRY_S`` have passed."""
    words_for = decided_words or str(target)
    try:
        live = live_weights(ctx.kube, view.namespace, view.virtual_services[0], view.name,
                            decided.subsets)
    except MeshbotError as exc:
        wait = max(READ_BACK_RETRY_S, exc.delay if isinstance(exc, TemporaryError) else 0.0)
        log.warning("%s: %s was refused (%s) and the weights could not be read back either "
                    "(%s): tried again in %gs", view.name, target, error.message, exc.message,
                    wait)
        ctx.store.defer_unapplied(view.name, owner, now + wait - GRACE_S)
        return None
    paused = None
    detail = f"{target} could not be written: {error.message}"
    try:
        paused = ctx.store.update(view.name, lambda current: _paused(
            current, decided, back_to, live, now, detail))
    except MeshbotError as exc:
        log.warning("could not pause %s: %s", view.name, exc.message)
    ctx.store.mark_applied(view.name, owner)  # what it decided will not be written
    if paused is not None:
        text = traffic_text.write_refused(
            view.name, words_for,
            words.weights(live.stable, live.canary, decided.stable_subset,
                          decided.canary_subset),
            error.message, rolling_back=decided.phase in (Phase.ROLLED_BACK, Phase.CANCELLED))
    else:
        text = traffic_text.reapply_impossible(str(target), error.message)
    ctx.audit.record(AuditEntry(
        actor="meshbot", action=action, target=view.name, outcome="failed",
        request_id=request_id, before=str(live), after=str(live), detail=text))
    _tell(ctx, decided, text)
    if paused is not None and paused.channel and paused.status_ts:
        try:  # the thread's root shows the rollout's state: paused, at the weights it has
            ctx.notifier.update(paused.channel, paused.status_ts,
                                "\n".join([paused.title, *traffic_text.rollout_lines(paused)]))
        except MeshbotError as exc:
            log.warning("%s: status not updated: %s", view.name, exc.message)
    return paused


def _paused(current: Rollout | None, decided: Rollout, back_to: Rollout | None, live: Weights,
            now: float, detail: str) -> Rollout | None:
    """``decided`` paused at ``live``, unless the rollout changed since (a command's own
    write wins)."""
    if current is None or current.id != decided.id \
            or current.history[-1:] != decided.history[-1:]:
        return None
    source = back_to if back_to is not None else current
    record = Transition(at=now, event=Event.PAUSE, before=current.phase, after=Phase.PAUSED,
                        weight=live.canary, detail=detail)
    history = (*current.history, record)
    if len(history) > MAX_HISTORY:
        history = (history[0], *history[len(history) - MAX_HISTORY + 1:])
    return source.model_copy(update={
        "phase": Phase.PAUSED, "weight": live.canary, "history": history,
        "resume_phase": None if source.phase.terminal else source.phase,
        "last_values": current.last_values})
