"""Write the weights a rollout's state already decided, when the job that decided them died
before writing them (e.g. a worker killed between marking a rollback and patching the route).

Every writer marks the service unapplied before its write and applied after it; a mark older
than a grace period belongs to a writer that is gone, and the ticker finishes its work.
"""

from __future__ import annotations

import logging
import time

from jobs.domain.rollout import Phase, Rollout
from jobs.domain.routes import Weights
from jobs.runtime.context import JobContext
from jobs.runtime.route_edits import back_to_stable
from jobs.runtime.weights import set_weights
from meshbot.errors import MeshbotError
from rendering import traffic as traffic_text

log = logging.getLogger("meshbot.reconcile")

GRACE_S = 30.0  # longer than any one job's write, retries included


def desired(rollout: Rollout) -> Weights:
    if rollout.phase in (Phase.ROLLED_BACK, Phase.CANCELLED):
        return Weights(stable=100, canary=0)
    if rollout.phase is Phase.PROMOTED:
        return Weights(stable=0, canary=100)
    return Weights.canary_at(rollout.weight)


def reconcile(ctx: JobContext, now: float | None = None) -> list[str]:
    """Re-apply the decided weights of every service whose writer is gone; which ones."""
    now = time.time() if now is None else now
    done = []
    for service in ctx.store.unapplied_since(now - GRACE_S):
        rollout = ctx.store.get(service)
        view = ctx.policy.service(service)
        if rollout is None or view is None:
            ctx.store.mark_applied(service)
            continue
        target = desired(rollout)
        subsets = rollout.subsets
        try:
            if rollout.phase is Phase.ROLLED_BACK:
                back_to_stable(ctx, view, subsets)
            else:
                set_weights(ctx.kube, view.namespace, view.virtual_services, view.name, subsets,
                            target, allow_gitops=view.gitops_allowed)
        except MeshbotError as exc:  # tried again next tick
            log.warning("could not re-apply %s for %s: %s", target, service, exc.message)
            continue
        ctx.store.mark_applied(service)
        done.append(service)
        if rollout.channel and rollout.thread_ts:
            try:
                ctx.notifier.reply(rollout.channel, rollout.thread_ts,
                                   traffic_text.reapplied(str(target)))
            except MeshbotError as exc:
                log.warning("re-applied %s for %s, not reported: %s", target, service,
                            exc.message)
    return done
