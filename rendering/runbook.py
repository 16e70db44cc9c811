"""Backup, restore, emergency and readiness: what their threads and tables say.

Pure functions: facts in, Slack mrkdwn out. Every message carries its essentials in ``text``,
names people as ``<@U…>`` and writes weights as ``stable 90 / canary 10``.
"""

from __future__ import annotations

from collections.abc import Sequence

from rendering.common import (
    _PLURALS,
    duration,
    escape,
    object_counts,
    people,
    when,
    who,
)


def backup_taken(backup_id: str, namespace: str, by: str, counts: dict[str, int]) -> str:
    return (f":floppy_disk: *Backup* `{backup_id}` of namespace `{namespace}` taken by "
            f"{who(by)}: {object_counts(counts)}. Compare with "
            f"`/mesh restore {backup_id} dry-run`; restore with `/mesh restore {backup_id}`.")


def backups_list(rows: Sequence[tuple[str, str, float, str, dict[str, int]]]) -> str:
    if not rows:
        return ":floppy_disk: *Backups*: none yet. Take one with `/mesh backup [namespace]`."
    lines = [f":floppy_disk: *Backups* (newest first, {len(rows)}):"]
    for backup_id, namespace, created_at, by, counts in rows:
        lines.append(f"• `{backup_id}` — namespace `{namespace}`, {when(created_at)}, by "
                     f"{who(by)}: {object_counts(counts)}")
    return "\n".join(lines)


def no_namespace(namespace: str) -> str:
    return f"namespace `{namespace}` does not exist"


def namespace_not_managed(namespace: str, forbidden: str) -> str:
    """A namespace meshbot may not read: its role names the namespaces it manages, so a missing
    one and an unmanaged one look the same to it (``forbidden`` is the 403, in meshbot's words)."""
    return (f"namespace `{namespace}` does not exist or is not one meshbot manages "
            f"({forbidden})")


def unknown_backup(backup_id: str) -> str:
    return f"there is no backup `{backup_id}` (it may have expired); `/mesh backups` lists them"


def restore_root(backup_id: str, namespace: str, by: str, dry_run: bool,
                 approvals: Sequence[str]) -> str:
    what = "Restore dry run" if dry_run else "Restore"
    approved = f", approved by {people(approvals)}" if approvals else ""
    return (f":rewind: *{what}* of backup `{backup_id}` into namespace `{namespace}` requested "
            f"by {who(by)}{approved}")


def restore_diff(diffs: Sequence[tuple[str, str, str, Sequence[str], bool]]) -> str:
    """One line per object of the backup: (kind, name, change, fields, restorable)."""
    if not diffs:
        return "The backup holds no objects: nothing to compare."
    lines = ["Backup compared with the live objects:"]
    for kind, name, change, fields, restorable in diffs:
        line = f"• {kind} `{name}`: {change}"
        if fields:
            shown = ", ".join(f"`{escape(f)}`" for f in fields[:8])  # the cluster's keys
            more = f" and {len(fields) - 8} more" if len(fields) > 8 else ""
            line += f" ({shown}{more})"
        if not restorable and change != "unchanged":
            line += " — not restored by meshbot"
        lines.append(line)
    return "\n".join(lines)


def restore_kinds_skipped(kinds: Sequence[str], differing: int) -> str:
    listed = " and ".join(_PLURALS.get(k, k) for k in kinds)
    return (f":information_source: {listed} are kept in the backup but not restored: meshbot "
            f"is not allowed to write them (its RBAC reads them only). {differing} of them "
            "differ from the backup; re-apply those by hand if needed.")


def restore_dry_run_done(to_create: int, to_update: int) -> str:
    return (f":mag: Dry run: a restore would create {to_create} and update {to_update} "
            "objects. Nothing was changed.")


def restore_done(created: Sequence[str], updated: Sequence[str], unchanged: int) -> str:
    if not created and not updated:
        return f":white_check_mark: Nothing to restore: all {unchanged} objects already match."
    parts = []
    if created:
        parts.append("created " + ", ".join(f"`{n}`" for n in created))
    if updated:
        parts.append("updated " + ", ".join(f"`{n}`" for n in updated))
    return (f":white_check_mark: Restored: {'; '.join(parts)} ({unchanged} already "
            "matched).")


def emergency_own_namespace(namespace: str) -> str:
    return (f"`{namespace}` is meshbot's own namespace: emergency never touches it (it would "
            "cut meshbot off while it works). Name the namespace in trouble.")


def emergency_root(namespace: str, by: str, approvals: Sequence[str]) -> str:
    approved = f", approved by {people(approvals)}" if approvals else ""
    return (f":rotating_light: *Emergency* in namespace `{namespace}` started by {who(by)}"
            f"{approved}: backup, mTLS PERMISSIVE, sidecar injection off, VirtualServices and "
            "DestinationRules removed, Deployments restarted one at a time.")


def emergency_step(step: int, total: int, text: str) -> str:
    return f"Step {step}/{total}: {text}"


def emergency_backup(backup_id: str, counts: dict[str, int]) -> str:
    return (f":floppy_disk: backup `{backup_id}` taken ({object_counts(counts)}); undo the "
            f"routing removal with `/mesh restore {backup_id}`.")


def emergency_permissive(changed: Sequence[str], created: str | None) -> str:
    parts = [f"`{n}` set to PERMISSIVE" for n in changed]
    if created:
        parts.append(f"`{created}` created as PERMISSIVE")
    return ":unlock: mTLS: " + ("; ".join(parts) if parts else "already PERMISSIVE") + "."


def emergency_injection(label: str, before: str | None, after: str | None) -> str:
    if before == after:
        return f":syringe: sidecar injection already off (`{label}={after}`)."
    if after is None:
        return f":syringe: sidecar injection off: label `{label}={before}` removed."
    return f":syringe: sidecar injection off: label `{label}` {before or 'unset'} → {after}."


def emergency_routing_removed(virtual_services: Sequence[str],
                              destination_rules: Sequence[str]) -> str:
    def listed(names: Sequence[str]) -> str:
        return ", ".join(f"`{n}`" for n in names) or "none"
    return (f":scissors: removed VirtualServices {listed(virtual_services)}; DestinationRules "
            f"{listed(destination_rules)}.")


def emergency_restarts_planned(names: Sequence[str]) -> str:
    if not names:
        return ":recycle: no Deployments to restart."
    return (f":recycle: restarting {len(names)} Deployments one at a time, each waiting for the "
            f"previous rollout and its PodDisruptionBudget: {', '.join(f'`{n}`' for n in names)}.")


def emergency_restarting(name: str, index: int, total: int) -> str:
    return f":recycle: restarting `{name}` ({index}/{total})."


def emergency_restarted(name: str, index: int, total: int) -> str:
    return f":white_check_mark: `{name}` restarted and ready ({index}/{total})."


def emergency_stuck(name: str, reason: str, waited_s: float, remaining: Sequence[str]) -> str:
    rest = ", ".join(f"`{n}`" for n in remaining) or "none"
    waited = duration(60 * (waited_s // 60) if waited_s >= 60 else round(waited_s))
    return (f":warning: Stopped: `{name}` is not ready after {waited} ({reason}). "
            f"Not restarted: {rest}. Check the rollout, then restart them by hand.")


def emergency_done(namespace: str, restarted: int) -> str:
    return (f":white_check_mark: Emergency in `{namespace}` complete: {restarted} Deployments "
            "restarted without sidecars.")


def readiness_table(rows: Sequence[tuple[str, bool, str]]) -> str:
    passed = sum(ok for _, ok, _ in rows)
    width = max((len(name) for name, _, _ in rows), default=0)
    table = "\n".join(f"{'PASS' if ok else 'FAIL'}  {name.ljust(width)}  {escape(detail)}"
                      for name, ok, detail in rows)
    icon = ":white_check_mark:" if passed == len(rows) else ":warning:"
    return (f"{icon} *Production readiness*: {passed} of {len(rows)} checks pass\n"
            f"```\n{table}\n```")
