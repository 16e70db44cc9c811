"""``/mesh backup [namespace]``, ``/mesh backups`` and ``/mesh restore <id> [dry-run]``.

A restore arrives here already approved (``jobs.tasks`` holds it until the policy's approvals are
in). It recomputes the diff against the live objects on every attempt, so a retried job neither
writes twice nor misses an object: creating what is missing and putting back the managed fields
(spec, labels, annotations) of what changed, each write conditional on the resourceVersion read.
"""

from __future__ import annotations

import time

from jobs.adapters.backup_store import BackupStore
from jobs.adapters.kube import Obj
from jobs.domain.backup_diff import (
    KINDS,
    Backup,
    Change,
    MeshKind,
    ObjectDiff,
    clean,
    diff,
    new_backup_id,
    object_key,
    restored_body,
)
from jobs.runtime.context import JobContext
from jobs.runtime.handlers.common import (
    first_found,
    planning_only,
    plans,
    record,
    request_thread,
    show_plan,
)
from jobs.runtime.reports import report
from meshbot.commands import Request
from meshbot.errors import MeshForbidden, MeshNotFound, Refused
from meshbot.plan import ObjectChange, Plan
from rendering import runbook as runbook_text


def group_version(ctx: JobContext, kind: MeshKind) -> tuple[str, str]:
    settings = ctx.settings
    return (settings.networking_group_version if kind.api == "networking"
            else settings.security_group_version)


def live_objects(ctx: JobContext, namespace: str, kinds: tuple[MeshKind, ...] = KINDS
                 ) -> list[Obj]:
    found: list[Obj] = []
    for kind in kinds:
        group, version = group_version(ctx, kind)
        for obj in ctx.kube.list_custom(group, version, kind.plural, namespace):
            # Items of a list carry their kind on a real API server; be sure of it regardless.
            obj.setdefault("kind", kind.kind)
            obj.setdefault("apiVersion", f"{group}/{version}")
            found.append(obj)
    return found


def require_namespace(ctx: JobContext, namespace: str) -> Obj:
    try:
        return ctx.kube.get_namespace(namespace)
    except MeshNotFound as exc:
        raise Refused(runbook_text.no_namespace(namespace)) from exc
    except MeshForbidden as exc:
        raise Refused(runbook_text.namespace_not_managed(namespace, exc.message)) from exc


def take_backup(ctx: JobContext, request: Request, namespace: str) -> Backup:
    """Snapshot ``namespace``; a retry of the same request returns the snapshot it took."""
    store = BackupStore(ctx.redis)
    existing = store.for_request(request.id)
    if existing is not None:
        return existing
    now = time.time()
    backup = Backup(
        id=new_backup_id(namespace, now), namespace=namespace, created_at=now,
        user=request.user, request_id=request.id,
        objects=tuple(clean(obj) for obj in live_objects(ctx, namespace)),
    )
    store.save(backup)
    return backup


def backup(ctx: JobContext, request: Request) -> str:
    namespace = request.command.target or ctx.policy.defaults.namespace
    require_namespace(ctx, namespace)
    taken = take_backup(ctx, request, namespace)
    text = runbook_text.backup_taken(taken.id, namespace, request.user, taken.counts())
    ts = request_thread(ctx, request, request.channel, text)
    audit(ctx, request, "done", namespace, after=f"backup {taken.id}", ts=ts)
    return taken.id


def backups(ctx: JobContext, request: Request) -> str:
    found = BackupStore(ctx.redis).latest()
    rows = [(b.id, b.namespace, b.created_at, b.user, b.counts()) for b in found]
    ctx.notifier.post_root(request.channel, runbook_text.backups_list(rows))
    return f"{len(found)} backups"


@plans
def restore(ctx: JobContext, request: Request) -> str:
    backup_id = request.command.target or ""
    saved = BackupStore(ctx.redis).get(backup_id)
    if saved is None:
        raise Refused(runbook_text.unknown_backup(backup_id))
    dry_run = request.command.dry_run
    namespace = saved.namespace
    require_namespace(ctx, namespace)
    live = live_objects(ctx, namespace)
    diffs = diff(saved.objects, live)
    pending = [d for d in diffs if d.restorable and d.change is not Change.UNCHANGED]
    writes = _writes(saved, live, pending)
    plan = Plan(tuple(ObjectChange(item.kind, namespace, item.name, current, body)
                      for item, current, body in writes))
    if dry_run and planning_only():
        return show_plan(ctx, request, plan)
    # What the first attempt found, kept for its retries (a write failed after others had
    # landed): a retry's own diff misses what was restored already, and would say and audit
    # only the rest.
    skipped = [d for d in diffs if not d.restorable and d.change is not Change.UNCHANGED]
    found = first_found(ctx, "restore", {
        "diffs": [[d.kind, d.name, d.change.value, list(d.fields), d.restorable]
                  for d in diffs],
        "skipped": len(skipped),
        "created": [f"{d.kind}/{d.name}" for d in pending if d.change is Change.CREATED],
        "updated": [f"{d.kind}/{d.name}" for d in pending if d.change is Change.CHANGED],
        "unchanged": sum(d.change is Change.UNCHANGED for d in diffs),
    })
    created, updated = list(found["created"]), list(found["updated"])
    root = runbook_text.restore_root(backup_id, namespace, request.user, dry_run,
                                     request.approved_by)
    ts = request_thread(ctx, request, request.channel, root)
    ctx.notifier.reply(request.channel, ts, runbook_text.restore_diff(
        [(kind, name, change, tuple(fields), restorable)
         for kind, name, change, fields, restorable in found["diffs"]]))
    if found["skipped"] or any(not k.restorable for k in KINDS):
        ctx.notifier.reply(request.channel, ts, runbook_text.restore_kinds_skipped(
            [k.kind for k in KINDS if not k.restorable], found["skipped"]))
    if dry_run:
        ctx.notifier.reply(request.channel, ts, runbook_text.restore_dry_run_done(
            len(created), len(updated)))
        return show_plan(ctx, request, plan)  # field by field, to the caller; audited
    _write(ctx, saved.namespace, writes)
    # Said after the writes: Slack away must not fail the job, whose retry would find them
    # made and report (and audit) a restore of nothing.
    report(ctx, request.channel, ts, runbook_text.restore_done(created, updated,
                                                               found["unchanged"]))
    audit(ctx, request, "done", backup_id, before=f"{len(created) + len(updated)} differed",
           after=f"created {len(created)}, updated {len(updated)}", ts=ts)
    return f"restored {len(created) + len(updated)}"


def _writes(saved: Backup, live: list[Obj], pending: list[ObjectDiff]
            ) -> list[tuple[ObjectDiff, Obj | None, Obj]]:
    """(diff, the live object or None, the body to create or PUT over it) of each write: what
    the plan shows and what ``_write`` sends."""
    by_key = {object_key(obj): obj for obj in saved.objects}
    live_by_key = {object_key(obj): obj for obj in live}
    found = []
    for item in pending:
        current = live_by_key.get((item.kind, item.name))
        found.append((item, current, restored_body(by_key[(item.kind, item.name)], current)))
    return found


def _write(ctx: JobContext, namespace: str,
           writes: list[tuple[ObjectDiff, Obj | None, Obj]]) -> None:
    kinds = {k.kind: k for k in KINDS}
    for item, current, body in writes:
        kind = kinds[item.kind]
        group, version = group_version(ctx, kind)
        if current is None:
            ctx.kube.create_custom(group, version, kind.plural, namespace, body)
        else:
            # A replace, not a merge patch: fields added since the backup must go too. The
            # resourceVersion makes it conditional (409 → the job retries with a fresh diff).
            ctx.kube.replace_custom(group, version, kind.plural, namespace, item.name, body)


def audit(ctx: JobContext, request: Request, outcome: str, target: str, *,
           before: str | None = None, after: str | None = None, ts: str | None = None) -> None:
    record(ctx, request, outcome, before=before, after=after, channel=request.channel, ts=ts,
           target=target)
