"""The guard that applies the service locks and the change freeze to a request.

Rollback (and abort, which rolls back) is never blocked and never waits: it takes no lock and
ignores the freeze — a rollback wins. Emergency runs during a freeze (it keeps its own
approvals). Which verbs change the mesh or take a lock comes from the verb registry.

Both obstacles go away (the lock's work ends, the freeze is lifted), so they are ``Blocked``: a
request not yet approved is refused at once, before approvers are asked; an approved one waits,
its approvals kept (``handlers.approvals``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from jobs.adapters.locks import Lock, Locks
from jobs.adapters.migration_store import MigrationStore
from meshbot.commands import Request
from meshbot.errors import Refused
from meshbot.verbs import VERBS, changes, verbs_where
from rendering import approvals as approval_text
from rendering import common as words

# Rollback wins: never blocked by a lock or the freeze.
ALWAYS_ALLOWED = verbs_where(wins=True)
# Verbs that change the mesh; the freeze refuses them, except incident work (emergency).
CHANGES = verbs_where(changes_mesh=True)
FROZEN = verbs_where(changes_mesh=True, during_freeze=False)
# Of those, the ones that act on one service and so hold its lock while they run.
LOCKING = verbs_where(locks_service=True)


class Blocked(Refused):
    """Refused for now by something that goes away: the freeze, or another request's lock.
    ``waiting`` says what the work would wait for, and until when it would be gone."""

    def __init__(self, message: str, waiting: str) -> None:
        super().__init__(message)
        self.waiting = waiting


def _busy(service: str, holder: Lock) -> Blocked:
    return Blocked(approval_text.busy(holder.user, holder.what, holder.since),
                   approval_text.waiting_busy(service, holder.user, holder.what, holder.since))


def check_gates(locks: Locks, request: Request, namespace: str | None = None) -> None:
    """Refuse (``Blocked``) a change during a freeze, on a service someone else has locked, or
    on one a migration of its ``namespace`` is moving now."""
    verb = request.command.verb
    if verb in ALWAYS_ALLOWED:
        return
    exempt = request.command.switch in VERBS[verb].freeze_exempt
    if verb in FROZEN and changes(request.command) and not exempt:
        frozen = locks.freeze()
        if frozen is not None:
            raise Blocked(approval_text.frozen(frozen.user, frozen.since),
                          approval_text.waiting_frozen(frozen.user, frozen.since))
    if verb in LOCKING and request.command.target:
        holder = locks.get(request.command.target)
        if holder is not None and holder.request_id != request.id:
            raise _busy(request.command.target, holder)
        if namespace is not None:
            _not_migrating(MigrationStore(locks.client, locks.keys), namespace,
                           request.command.target)


def _not_migrating(store: MigrationStore, namespace: str, service: str) -> None:
    """A service that ``/mesh migrate`` is moving right now (injecting, watching, blue-green)
    takes no other change: the workflow's undo would no longer put back what it found."""
    workflow = store.get(namespace)
    step = workflow.step if workflow is not None and workflow.status.active else None
    if workflow is not None and step is not None and step.service == service:
        raise Blocked(approval_text.migrating(service, namespace, workflow.requester),
                      approval_text.waiting_migrating(service, namespace))

@contextlib.contextmanager
def service_lock(locks: Locks, request: Request) -> Iterator[None]:
    """Hold the target service's lock while the work runs (a no-op for verbs that take none)."""
    service = request.command.target
    if request.command.verb not in LOCKING or not service:
        yield
        return
    holder = locks.acquire(Lock(service=service, request_id=request.id, user=request.user,
                                what=words.describe(request.command), since=time.time()))
    if holder is not None:
        raise _busy(service, holder)
    try:
        yield
    finally:
        locks.release(service, request.id)
