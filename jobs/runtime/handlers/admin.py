"""``/mesh locks``, ``unlock``, ``freeze on|off`` and ``audit``: meshbot's own controls.

Their answers are channel messages (the team sees who froze, who broke a lock), said after the
change: one Slack does not take now is owed (``reports.announce``), never a failed job whose
retry would find the lock or freeze gone and refuse it. ``unlock`` and ``freeze off`` arrive
here only once approved (the policy decides how many approvals; the approval's re-check has
confirmed the same lock or freeze is still there).
"""

from __future__ import annotations

import time

from jobs.adapters.locks import Freeze, Locks
from jobs.runtime.context import JobContext
from jobs.runtime.handlers.common import record
from jobs.runtime.reports import announce
from meshbot.commands import Request
from meshbot.errors import Refused
from rendering import admin as admin_text
from rendering import audit as audit_text


def locks(ctx: JobContext, request: Request) -> str:
    held = Locks(ctx.redis).all()
    freeze = Locks(ctx.redis).freeze()
    rows = [(lock.service, lock.user, lock.what, lock.since) for lock in held]
    text = admin_text.locks_list(rows, (freeze.user, freeze.since) if freeze else None)
    ctx.notifier.post_root(request.channel, text)
    return f"{len(held)} locks"


def unlock(ctx: JobContext, request: Request) -> str:
    service = request.command.target or ""
    store = Locks(ctx.redis)
    # A retry (its worker died after the break) says and audits the lock it broke; it never
    # breaks one taken since.
    broken = store.broken_by(request.id)
    if broken is None:
        held = store.get(service)
        if held is None:
            raise Refused(admin_text.not_locked(service))
        broken = store.break_lock(service, held.request_id, by=request.id)
    if broken is None:  # released between the read and the break: nothing stale any more
        raise Refused(admin_text.not_locked(service))
    text = admin_text.lock_broken(service, broken.user, broken.what, broken.since, request.user,
                                request.approved_by)
    ts = announce(ctx, request.channel, text, key=f"{request.id}:unlock")
    _record(ctx, request, "done", before=f"locked by {broken.user}: {broken.what}",
            after="unlocked", ts=ts)
    return f"{service}: unlocked"


def freeze(ctx: JobContext, request: Request) -> str:
    store = Locks(ctx.redis)
    if request.command.switch == "on":
        already = store.set_freeze(Freeze(request_id=request.id, user=request.user,
                                          since=time.time()))
        # A retry of this job (its worker died after the freeze) finds its own freeze and
        # still says and audits it, once.
        if already is not None and already.request_id != request.id:
            raise Refused(admin_text.freeze_already(already.user, already.since))
        ts = announce(ctx, request.channel, admin_text.freeze_on(request.user),
                      key=f"{request.id}:freeze")
        _record(ctx, request, "done", before="off", after="frozen", ts=ts)
        return "frozen"
    # As ``unlock``: a retry says the freeze it lifted, never lifts one set since.
    lifted = store.lifted_by(request.id) or store.lift_freeze(by=request.id)
    if lifted is None:
        raise Refused(admin_text.no_freeze())
    ts = announce(ctx, request.channel, admin_text.freeze_lifted(
        request.user, request.approved_by, lifted.user, lifted.since), key=f"{request.id}:thaw")
    _record(ctx, request, "done", before=f"frozen by {lifted.user}", after="off", ts=ts)
    return "lifted"


def audit(ctx: JobContext, request: Request) -> str:
    target = request.command.target or ""
    count = int(request.command.options.get("n", "10"))
    entries = ctx.audit.last(target, count)
    ctx.notifier.post_root(request.channel, audit_text.audit_list(target, entries, count))
    return f"{len(entries)} entries"


def _record(ctx: JobContext, request: Request, outcome: str, *, before: str, after: str,
            ts: str | None) -> None:
    """``ts``: the announcement's, None while it is owed to Slack (the entry has no link)."""
    record(ctx, request, outcome, before=before, after=after, channel=request.channel, ts=ts,
           target=request.command.target or request.command.verb.value)
