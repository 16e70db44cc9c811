"""Every piece of user-facing Slack text meshbot writes, as small pure functions.

Messages carry their essentials in plain ``text`` (Block Kit may only add layout), name people as
``<@U…>`` and write weights as ``stable 90 / canary 10``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from meshbot.commands import Command, Verb


def user(user_id: str) -> str:
    return f"<@{user_id}>"


def weights(stable: int, canary: int, stable_name: str = "stable",
            canary_name: str = "canary") -> str:
    return f"{stable_name} {stable} / {canary_name} {canary}"


def weight_change(before: tuple[int, int], after: tuple[int, int],
                  names: tuple[str, str] = ("stable", "canary")) -> str:
    return (f"{names[0]} {before[0]}→{after[0]} / {names[1]} {before[1]}→{after[1]}")


def describe(command: Command) -> str:
    """The command as the caller typed it, normalised."""
    parts = ["/mesh", command.verb.value]
    if command.target:
        parts.append(command.target)
    if command.percent is not None:
        parts.append(str(command.percent))
    if command.switch:
        parts.append(command.switch)
    if command.steps:
        parts.append("steps=" + ",".join(str(s) for s in command.steps))
    if command.interval_s is not None:
        parts.append(f"interval={command.interval_s:g}s")
    return " ".join(parts)


# --- replies to the caller only (ephemeral)

def refused(reason: str) -> str:
    return f":no_entry: Refused: {reason}"


def accepted(command: Command) -> str:
    return f":hourglass_flowing_sand: Accepted `{describe(command)}` — working on it."


def needs_approval(command: Command, reason: str) -> str:
    return (f":hourglass_flowing_sand: Accepted `{describe(command)}`, pending approval: {reason} "
            "The request is posted in the channel for approvers to react on.")


def duplicate(command: Command) -> str:
    return f"`{describe(command)}` was already received; it runs once."


def help_text(verbs: Sequence[str], usages: dict[str, str]) -> str:
    if not verbs:
        return "You may not run any /mesh command in this channel."
    lines = ["*/mesh commands you may run here:*"]
    lines += [f"• `{usages[v]}`" for v in verbs if v in usages]
    return "\n".join(lines)


# --- thread roots and replies (posted by workers)

def canary_root(service: str, namespace: str, requester: str, before: tuple[int, int],
                after: tuple[int, int], names: tuple[str, str]) -> str:
    return (f":large_yellow_circle: *Canary* `{service}` ({namespace}) requested by "
            f"{user(requester)}: {weight_change(before, after, names)}")


def weights_applied(before: tuple[int, int], after: tuple[int, int],
                    names: tuple[str, str], virtual_services: Iterable[str]) -> str:
    listed = ", ".join(f"`{vs}`" for vs in virtual_services)
    return (f":white_check_mark: Weights applied on {listed}: now "
            f"{weights(after[0], after[1], *names)} (was {weights(before[0], before[1], *names)})")


def rollback_root(service: str, namespace: str, requester: str, verb: str = "rollback") -> str:
    who = user(requester) if requester.startswith(("U", "W")) else (requester or "meshbot")
    title = "Abort" if verb == "abort" else "Rollback"
    return f":rewind: *{title}* `{service}` ({namespace}) requested by {who}"


def rolled_back(before: tuple[int, int], names: tuple[str, str]) -> str:
    return (f":rewind: Rolled back: all traffic on {names[0]} — {weights(100, 0, *names)} "
            f"(was {weights(before[0], before[1], *names)})")


def already_stable(names: tuple[str, str]) -> str:
    return f"Nothing to roll back: traffic is already {weights(100, 0, *names)}."


def rollout_header(command: Command, service: str, namespace: str, requester: str,
                   before: tuple[int, int], after: tuple[int, int],
                   names: tuple[str, str]) -> str:
    kind = "Canary" if command.verb is Verb.CANARY else "Rollout"
    plan = ""
    if command.verb is Verb.ROLLOUT and command.steps:
        plan = f" steps {', '.join(f'{s}%' for s in command.steps)};"
    return (f":large_yellow_circle: *{kind}* `{service}` ({namespace}) requested by "
            f"{user(requester)}:{plan} {weight_change(before, after, names)}")


def promoted(before: tuple[int, int], names: tuple[str, str],
             approvers: Sequence[str]) -> str:
    by = f" (approved by {', '.join(user(a) for a in approvers)})" if approvers else ""
    return (f":rocket: Promoted: all traffic on {names[1]} — {weights(0, 100, *names)} "
            f"(was {weights(before[0], before[1], *names)}){by}. {names[1]} is now live.")


def paused_or_resumed(action: str, requester: str, weight: int) -> str:
    icon = ":double_vertical_bar:" if action == "pause" else ":arrow_forward:"
    verb = "Paused" if action == "pause" else "Resumed"
    return f"{icon} {verb} by {user(requester)} at canary {weight}%"


class RolloutLike(Protocol):
    """What the status lines read from a rollout (kept structural: bot does not import jobs)."""

    @property
    def phase(self) -> Any: ...
    @property
    def fixed(self) -> bool: ...
    @property
    def step_index(self) -> int: ...
    @property
    def steps(self) -> tuple[int, ...]: ...
    @property
    def weight(self) -> int: ...
    @property
    def failed_checks(self) -> int: ...
    @property
    def failure_threshold(self) -> int: ...
    @property
    def requested_by(self) -> str: ...
    @property
    def last_values(self) -> tuple[str, ...]: ...


def phase_name(phase: Any) -> str:
    return str(getattr(phase, "value", phase)).replace("_", " ")


def rollout_lines(rollout: RolloutLike) -> list[str]:
    lines = [f"Rollout: {phase_name(rollout.phase)}, canary {rollout.weight}%"]
    if not rollout.fixed:
        lines.append(f"Step {rollout.step_index + 1}/{len(rollout.steps)} "
                     f"(steps {', '.join(f'{s}%' for s in rollout.steps)})")
    lines.append(f"Requested by {user(rollout.requested_by)}; failed checks "
                 f"{rollout.failed_checks}/{rollout.failure_threshold}")
    lines += [f"• {value}" for value in rollout.last_values]
    return lines


def status(service: str, namespace: str, current: tuple[int, int], names: tuple[str, str],
           lines: Sequence[str]) -> str:
    head = f":bar_chart: *Status* `{service}` ({namespace}): {weights(*current, *names)}"
    return "\n".join([head, *(lines or ["Rollout: none"])])


def _values(lines: Sequence[str]) -> str:
    return "; ".join(lines) if lines else "no measurements"


def automatic_rollback(service: str, failing: Sequence[str], failed_checks: int,
                       no_data: bool) -> str:
    if no_data:
        return (f":rotating_light: Automatic rollback of `{service}`: no SLO evidence past the "
                f"deadline ({_values(failing)}). All traffic is back on stable.")
    return (f":rotating_light: Automatic rollback of `{service}` after {failed_checks} failed "
            f"checks in a row: {_values(failing)}. All traffic is back on stable.")


def rollback_alert(service: str, reason: str) -> str:
    return f":rotating_light: *Alert* `{service}` was rolled back automatically. {reason}"


def step_advanced(index: int, count: int, weight: int, lines: Sequence[str]) -> str:
    return (f":arrow_up: Step {index + 1}/{count}: canary now {weight}% — the previous step "
            f"passed ({_values(lines)})")


def step_needs_approval(weight: int, lines: Sequence[str]) -> str:
    return (f":raised_hand: The step passed ({_values(lines)}), but the next one, canary "
            f"{weight}%, needs approval: the request is posted in the channel. Checks go on "
            "at the current weight meanwhile.")


def ready_to_promote(service: str, lines: Sequence[str]) -> str:
    return (f":white_check_mark: Last step passed ({_values(lines)}). `{service}` is ready: "
            f"`/mesh promote {service}` sends all traffic to the canary.")


def holding(failing: Sequence[str], policy: str, deadline_s: float) -> str:
    then = "roll back" if policy == "rollback" else "keep holding and alert"
    return (f":pause_button: Holding: no SLO evidence ({_values(failing)}). Not advancing; "
            f"after {deadline_s:g}s without data meshbot will {then}.")


def holding_too_long(service: str, deadline_s: float, failing: Sequence[str]) -> str:
    return (f":rotating_light: *Alert* `{service}` has held for more than {deadline_s:g}s without "
            f"SLO evidence ({_values(failing)}). Check its traffic and Prometheus, then "
            f"`/mesh rollback {service}` or `/mesh resume {service}`.")


def reapplied(weights_text: str) -> str:
    return (f":wrench: The worker that was changing this service stopped before writing its "
            f"weights; meshbot wrote them now: {weights_text}.")


def check_failed(failed: int, threshold: int, failing: Sequence[str]) -> str:
    return (f":warning: Check failed ({failed}/{threshold} before automatic rollback): "
            f"{_values(failing)}")


def failed(command: Command, reason: str) -> str:
    return f":x: `{describe(command)}` failed: {reason}"


def gave_up(command: Command, reason: str, attempts: int) -> str:
    return f":x: `{describe(command)}` gave up after {attempts} attempts: {reason}"


def stopped_by_rollback(service: str) -> str:
    return f":rewind: `{service}` was rolled back meanwhile; this change was not applied."


# --- approvals, locks, freeze and audit (issue 4)

def when(epoch: float) -> str:
    """A moment as Slack renders it in the reader's time zone, with a UTC fallback in ``text``."""
    fallback = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))
    return f"<!date^{int(epoch)}^{{date_short_pretty}} {{time_secs}}|{fallback}>"


def duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def member(member_id: str) -> str:
    """A user (``<@U…>``) or a user group (``<!subteam^S…>``), as Slack renders them."""
    return f"<!subteam^{member_id}>" if member_id.startswith("S") else f"<@{member_id}>"


def who(actor: str) -> str:
    """Slack users as mentions; anything else (``shell:alice``, ``meshbot``) as written."""
    return user(actor) if actor.startswith(("U", "W")) else (actor or "meshbot")


def people(ids: Sequence[str]) -> str:
    names = [member(i) for i in ids]
    if len(names) <= 1:
        return "".join(names) or "nobody"
    return ", ".join(names[:-1]) + " and " + names[-1]


def busy(holder: str, what: str, since: float) -> str:
    return f"busy: {who(holder)} `{what}` since {when(since)}"


def frozen(holder: str, since: float) -> str:
    return (f"changes are frozen: {who(holder)} froze them since {when(since)}; only "
            "`/mesh rollback` runs until `/mesh freeze off` (which needs approval)")


def plan_weights(service: str, namespace: str, before: tuple[int, int],
                 after: tuple[int, int], names: tuple[str, str]) -> str:
    return f"`{service}` ({namespace}): {weight_change(before, after, names)}"


def plan_namespace(command: Command) -> str:
    target = command.target or ""
    if command.verb is Verb.MTLS:
        return f"mTLS in namespace `{target}` set to {(command.switch or '').upper()}"
    if command.verb is Verb.INJECT_NAMESPACE:
        return f"sidecar injection turned on for namespace `{target}`"
    if command.verb is Verb.EMERGENCY:
        return (f"emergency in namespace `{target}`: mTLS PERMISSIVE, sidecar injection off, "
                "its VirtualServices and DestinationRules removed (after a backup), "
                "Deployments restarted one at a time")
    if command.verb is Verb.RESTORE:
        return f"mesh configuration restored from backup `{target}`"
    return f"`{describe(command)}`"


def plan_unlock(service: str, holder: str, what: str, since: float) -> str:
    return (f"break the lock on `{service}` held by {who(holder)} for `{what}` "
            f"since {when(since)}")


def plan_freeze_off(holder: str, since: float) -> str:
    return f"lift the change freeze set by {who(holder)} since {when(since)}"


def approval_request(command: Command, requester: str, plan: str, approvers: Sequence[str],
                     required: int, approve_emoji: str, reject_emoji: str, expires_at: float,
                     ttl_s: float, thread_link: str | None, status_line: str) -> str:
    plural = "approval" if required == 1 else "approvals"
    lines = [
        f":raised_hand: *Approval needed*: `{describe(command)}` requested by {user(requester)}",
        f"Plan: {plan}",
        f"Needs {required} {plural} from {', '.join(member(a) for a in approvers)} "
        "(the requester's own reaction does not count).",
        f"React with :{approve_emoji}: to approve or :{reject_emoji}: to reject. "
        f"Expires {when(expires_at)} ({duration(ttl_s)} after the request).",
    ]
    if thread_link:
        lines.append(f"Rollout thread: <{thread_link}|open>")
    lines.append(status_line)
    return "\n".join(lines)


def approval_progress(approvals: Sequence[str], required: int) -> str:
    if not approvals:
        return f"Approvals so far: 0 of {required}."
    return f"Approvals so far: {len(approvals)} of {required} — {people(approvals)}."


def approval_approved(approvals: Sequence[str]) -> str:
    return f":white_check_mark: Approved by {people(approvals)}; the change is running."


def approval_rejected(by: str) -> str:
    return f":x: Rejected by {user(by)}; nothing was changed."


def approval_expired(ttl_s: float, approvals: Sequence[str], required: int) -> str:
    return (f":hourglass: Expired: {len(approvals)} of {required} approvals within "
            f"{duration(ttl_s)}; nothing was changed. Run the command again if still wanted.")


def approval_voided(changes: Sequence[tuple[str, str, str]]) -> str:
    listed = "; ".join(f"{fact} was {was}, now {now}" for fact, was, now in changes)
    return (f":warning: Voided: the target changed since this was requested ({listed}). "
            "Nothing was changed; run the command again if still wanted.")


def approval_done(approvals: Sequence[str]) -> str:
    return f":white_check_mark: Approved by {people(approvals)}; done."


def approved_by(approvals: Sequence[str], link: str | None) -> str:
    where = f" (<{link}|approval request>)" if link else ""
    return f":white_check_mark: Approved by {people(approvals)}{where}."


def locks_list(locks: Sequence[tuple[str, str, str, float]],
               freeze: tuple[str, float] | None) -> str:
    lines = [":lock: *Locks*"]
    if freeze is not None:
        lines.append(f":snowflake: Change freeze on: set by {who(freeze[0])} since "
                     f"{when(freeze[1])}")
    if not locks:
        lines.append("No service is locked.")
    for service, holder, what, since in locks:
        lines.append(f"• `{service}`: {who(holder)} `{what}` since {when(since)}")
    return "\n".join(lines)


def not_locked(service: str) -> str:
    return f"`{service}` is not locked; there is nothing to unlock."


def lock_broken(service: str, holder: str, what: str, since: float, by: str,
                approvals: Sequence[str]) -> str:
    approved = f", approved by {people(approvals)}" if approvals else ""
    return (f":unlock: Lock on `{service}` broken by {who(by)}{approved}. It was held by "
            f"{who(holder)} for `{what}` since {when(since)}.")


def freeze_on(by: str) -> str:
    return (f":snowflake: *Change freeze on* by {who(by)}: every change but `/mesh rollback` is "
            "refused until `/mesh freeze off` (which needs approval).")


def freeze_already(holder: str, since: float) -> str:
    return f"The change freeze is already on: set by {who(holder)} since {when(since)}."


def no_freeze() -> str:
    return "There is no change freeze to lift."


def freeze_lifted(by: str, approvals: Sequence[str], holder: str, since: float) -> str:
    approved = f", approved by {people(approvals)}" if approvals else ""
    return (f":sunny: *Change freeze lifted* by {who(by)}{approved} (it was set by {who(holder)} "
            f"since {when(since)}). Changes are accepted again.")


class AuditLike(Protocol):
    """What an audit line shows (structural: the bot does not import jobs)."""

    @property
    def at(self) -> float: ...
    @property
    def actor(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def before(self) -> str | None: ...
    @property
    def after(self) -> str | None: ...
    @property
    def approvers(self) -> tuple[str, ...]: ...
    @property
    def permalink(self) -> str | None: ...
    @property
    def detail(self) -> str: ...


def audit_line(entry: AuditLike) -> str:
    parts = [f"• {when(entry.at)} {who(entry.actor)} {entry.action} — {entry.outcome}"]
    if entry.before or entry.after:
        parts.append(f"{entry.before or '?'} → {entry.after or '?'}")
    if entry.approvers:
        parts.append(f"approved by {people(entry.approvers)}")
    if entry.detail:
        parts.append(entry.detail)
    if entry.permalink:
        parts.append(f"<{entry.permalink}|link>")
    return "; ".join(parts)


def audit_list(target: str, entries: Sequence[AuditLike], count: int) -> str:
    if not entries:
        return f":ledger: *Audit* `{target}`: no entries yet."
    head = f":ledger: *Audit* `{target}`: last {len(entries)} of at most {count}, newest first"
    return "\n".join([head, *(audit_line(e) for e in entries)])


# --- runbook: backup, restore, emergency, readiness, alert threads

_PLURALS = {"VirtualService": "VirtualServices", "DestinationRule": "DestinationRules",
            "Gateway": "Gateways", "PeerAuthentication": "PeerAuthentications",
            "AuthorizationPolicy": "AuthorizationPolicies"}


def kind_count(kind: str, count: int) -> str:
    return f"{count} {kind if count == 1 else _PLURALS.get(kind, kind + 's')}"


def object_counts(counts: dict[str, int]) -> str:
    return ", ".join(kind_count(kind, n) for kind, n in counts.items())


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
            shown = ", ".join(f"`{f}`" for f in fields[:8])
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
    table = "\n".join(f"{'PASS' if ok else 'FAIL'}  {name.ljust(width)}  {detail}"
                      for name, ok, detail in rows)
    icon = ":white_check_mark:" if passed == len(rows) else ":warning:"
    return (f"{icon} *Production readiness*: {passed} of {len(rows)} checks pass\n"
            f"```\n{table}\n```")


def alert_thread(service: str, status: str, alerts: Sequence[Sequence[str]],
                 rollout: Sequence[str], rollback_emoji: str) -> str:
    """The alert thread's root: what fires, the rollout in progress, what to do."""
    icon = ":white_check_mark:" if status == "resolved" else ":rotating_light:"
    state = "RESOLVED" if status == "resolved" else "FIRING"
    lines = [f"{icon} *Alert {state}* for `{service}` ({len(alerts)} alert"
             f"{'' if len(alerts) == 1 else 's'})"]
    for alert in alerts:
        lines += [f"• {alert[0]}", *(f"    {detail}" for detail in alert[1:])]
    lines += list(rollout) or ["Rollout in progress: none"]
    if status != "resolved":
        lines.append(f"Commands: `/mesh rollback {service}`, `/mesh status {service}`; or react "
                     f"to this message with :{rollback_emoji}: to roll back.")
    return "\n".join(lines)


def alert_update(status: str, alerts: Sequence[Sequence[str]]) -> str:
    if status == "resolved":
        return ":white_check_mark: Resolved: " + "; ".join(a[0] for a in alerts)
    return ":rotating_light: Update: " + "; ".join(a[0] for a in alerts)


def alert_rollback_started(by: str, service: str) -> str:
    return f":rewind: {who(by)} asked for a rollback of `{service}` from this alert."


def alert_rollback_refused(service: str, reason: str) -> str:
    return f"the rollback of `{service}` from the alert was refused: {reason}"


# --- runbook: header routes, mirroring, blue-green

def _listed(names: Iterable[str]) -> str:
    shown = ", ".join(f"`{n}`" for n in names)
    return shown or "nothing (already as asked)"


def no_ready_canary(service: str, subset: str, selector: str, namespace: str) -> str:
    return (f"the {subset!r} subset of {service} has no ready pods (selector {selector} in "
            f"namespace {namespace}); no traffic was shifted and nothing was changed. Deploy it "
            "and wait until it is ready.")


def ab_root(service: str, namespace: str, requester: str, header: object | None,
            canary: str) -> str:
    if header is None:
        return (f":twisted_rightwards_arrows: *Header route off* `{service}` ({namespace}) "
                f"requested by {user(requester)}")
    return (f":twisted_rightwards_arrows: *Header route* `{service}` ({namespace}) requested by "
            f"{user(requester)}: requests with header `{header}` go to {canary}; all others "
            "follow the weights")


def ab_applied(header: object, canary: str, virtual_services: Iterable[str],
               changed: Sequence[str], before: object | None) -> str:
    was = f" (replaces `{before}`)" if before is not None and str(before) != str(header) else ""
    return (f":white_check_mark: Header route `{header}` → {canary} in place before the "
            f"weighted route on {_listed(virtual_services)}{was}; written: {_listed(changed)}. "
            "Remove it with `/mesh ab <service> off`.")


def ab_removed(header: object, changed: Sequence[str]) -> str:
    return (f":white_check_mark: Header route `{header}` removed from {_listed(changed)}: all "
            "requests follow the weights again.")


def no_header_route(service: str) -> str:
    return f"`{service}` has no header route of meshbot's to remove; nothing was changed"


def mirror_root(service: str, namespace: str, requester: str, percent: int | None,
                canary: str) -> str:
    if percent is None:
        return (f":mirror: *Mirror off* `{service}` ({namespace}) requested by "
                f"{user(requester)}")
    return (f":mirror: *Mirror* `{service}` ({namespace}) requested by {user(requester)}: a "
            f"copy of {percent}% of live requests to {canary} (its answers are discarded)")


def mirror_applied(percent: int | None, before: float | None, canary: str,
                   virtual_services: Iterable[str], changed: Sequence[str],
                   mirror_safe: bool) -> str:
    was = "nothing" if before is None else f"{before:g}%"
    if percent is None:
        return (f":white_check_mark: Mirroring off on {_listed(virtual_services)} (was {was}); "
                f"written: {_listed(changed)}.")
    note = "" if mirror_safe else " Confirmed although mirrored requests repeat their writes."
    return (f":white_check_mark: Mirroring {percent}% of live traffic to {canary} on "
            f"{_listed(virtual_services)} (was {was}); written: {_listed(changed)}.{note} "
            "Stop it with `/mesh mirror <service> off`.")


def not_mirrored(service: str) -> str:
    return f"`{service}` mirrors nothing; nothing was changed"


def mirror_zero(service: str) -> str:
    return (f"mirroring 0% sends nothing: give a percent from 1 to 100, or "
            f"`/mesh mirror {service} off` to stop mirroring")


def mirror_needs_confirmation(service: str, percent: int) -> str:
    return (f"mirroring duplicates writes: every mirrored POST/PUT/DELETE to `{service}` is "
            "executed a second time by the canary (payments charged twice, rows written twice), "
            "and the policy does not mark it `mirror_safe`. If the canary's writes go nowhere "
            f"real, confirm with `/mesh mirror {service} {percent} confirm=yes`")


def bluegreen_root(service: str, namespace: str, requester: str, header: object,
                   names: tuple[str, str], approvals: int) -> str:
    after = (f"after {approvals} approval{'s' if approvals != 1 else ''}" if approvals
             else "on request")
    return (f":large_blue_circle: *Blue-green* `{service}` ({namespace}) requested by "
            f"{user(requester)}: preview on header `{header}` → {names[1]}, then "
            f"{weights(90, 10, *names)} under analysis, then all traffic to {names[1]} {after}")


def bluegreen_preview(header: object, green: str, virtual_services: Iterable[str]) -> str:
    return (f":eyes: Preview: requests with header `{header}` go to {green} on "
            f"{_listed(virtual_services)}.")


def bluegreen_next(service: str, names: tuple[str, str], approvals: int) -> str:
    gate = (f" (needs {approvals} approval{'s' if approvals != 1 else ''})" if approvals
            else "")
    return (f":hourglass_flowing_sand: Analysis watches {names[1]} at 10%. When it passes, "
            f"`/mesh bluegreen {service}` again switches all traffic to {names[1]} and removes "
            f"the preview route{gate}. `/mesh rollback {service}` returns the weighted traffic to "
            f"{names[0]}; the preview route stays until `/mesh ab {service} off`.")


def bluegreen_busy(service: str, phase: str) -> str:
    return (f"`{service}` has a rollout {phase.replace('_', ' ')}: a blue-green cutover starts "
            f"when none is in progress and switches once analysis passed (ready to promote). "
            f"See `/mesh status {service}`.")


def bluegreen_done(names: tuple[str, str], changed: Sequence[str]) -> str:
    return (f":large_blue_circle: Blue-green done: {names[1]} is live; preview route removed "
            f"from {_listed(changed)}. {names[0]} can be scaled down once you are sure.")


# --- runbook: sidecar migration and mTLS

def no_namespace(namespace: str) -> str:
    return f"namespace `{namespace}` does not exist; nothing was changed"


def own_namespace(namespace: str, what: str) -> str:
    return (f"`{namespace}` is meshbot's own namespace and is never {what}: meshbot must stay "
            "reachable to roll the mesh back")


def no_deployments(service: str, namespace: str) -> str:
    return (f"no Deployment labelled `app={service}` in namespace `{namespace}`; nothing was "
            "changed")


def _by_tier(services: Mapping[str, Sequence[str]]) -> str:
    return "; ".join(f"{tier}: {', '.join(f'`{s}`' for s in names)}"
                     for tier, names in services.items())


def inject_root(service: str, namespace: str, requester: str,
                deployments: Sequence[str]) -> str:
    return (f":syringe: *Sidecar injection* `{service}` ({namespace}) requested by "
            f"{user(requester)}: pod template annotation `sidecar.istio.io/inject: \"true\"` on "
            f"{_listed(deployments)}")


def tier_order_skipped(service: str, tier: str, missing: Mapping[str, Sequence[str]]) -> str:
    return (f":warning: Tier order skipped: the runbook migrates pilot → core → critical, and "
            f"`{service}` is {tier} while these earlier-tier services have no sidecar yet: "
            f"{_by_tier(missing)}. Going ahead as asked.")


def deployment_unchanged(name: str) -> str:
    return f"• `{name}`: already annotated; not restarted"


def deployment_rolling(name: str, facts: Mapping[str, int]) -> str:
    return (f"• `{name}`: pod template changed (generation {facts['generation']}); Kubernetes "
            f"replaces its {facts['replicas']} pod(s) with injected ones — "
            f"{facts['updated']} updated, {facts['ready']} ready so far")


def inject_done(service: str, lines: Sequence[str], changed: bool) -> str:
    head = (":white_check_mark: Injection requested; the rollout restarts the pods:" if changed
            else ":white_check_mark: Nothing to do: every Deployment already asks for a sidecar.")
    follow = (f"\nFollow it with `kubectl rollout status deployment -l app={service}`; "
              f"`/mesh status {service}` once pods are ready." if changed else "")
    return "\n".join([head, *lines]) + follow


def inject_namespace_root(namespace: str, requester: str) -> str:
    return (f":syringe: *Namespace injection* `{namespace}` requested by {user(requester)}: "
            "label `istio-injection=enabled`")


def namespace_before_tiers(namespace: str, pending: Mapping[str, Sequence[str]]) -> str:
    return (f":warning: Tier order skipped: the runbook labels the namespace last, after "
            f"migrating pilot → core → critical one service at a time, and in `{namespace}` "
            f"these have no sidecar yet: {_by_tier(pending)}. They get one at their next "
            "restart.")


def namespace_revision(namespace: str, revision: str) -> str:
    return (f":information_source: `{namespace}` uses revision-based injection "
            f"(`istio.io/rev={revision}`); left as is — `istio-injection` was not added, since "
            "it would take precedence over the revision.")


def namespace_already_injected(namespace: str) -> str:
    return f":white_check_mark: `{namespace}` already has `istio-injection=enabled`; unchanged."


def namespace_injected(namespace: str, before: str | None) -> str:
    was = f"was `{before}`" if before else "was unset"
    return (f":white_check_mark: `{namespace}` labelled `istio-injection=enabled` ({was}). New "
            "pods get a sidecar; running pods get one when they restart.")


def mtls_root(namespace: str, mode: str, requester: str) -> str:
    extra = " and DestinationRules to ISTIO_MUTUAL" if mode == "STRICT" else ""
    return (f":lock: *mTLS* `{namespace}` requested by {user(requester)}: PeerAuthentication "
            f"`default` to {mode}{extra}")


def strict_without_injection(namespace: str) -> str:
    return (f":warning: `{namespace}` is not labelled for sidecar injection: workloads without "
            "a sidecar cannot answer mTLS, and clients without one can no longer call the "
            "namespace's workloads once it is STRICT.")


def mtls_destination_rules(changed: Sequence[str], already: Sequence[str],
                           left: Sequence[tuple[str, str]]) -> str:
    parts = [f":white_check_mark: DestinationRules: `tls.mode: ISTIO_MUTUAL` set on "
             f"{_listed(changed)}"]
    if already:
        parts.append(f"already so: {_listed(already)}")
    if left:
        parts.append("left alone (TLS origination to an outside host): "
                     + ", ".join(f"`{n}` ({m})" for n, m in left))
    return "; ".join(parts) + "."


def mtls_peer_authentication(namespace: str, name: str, before: str | None, mode: str,
                             created: bool) -> str:
    if created:
        return (f":white_check_mark: PeerAuthentication `{namespace}/{name}` created with mTLS "
                f"{mode}.")
    if before == mode:
        return f":white_check_mark: PeerAuthentication `{namespace}/{name}` was already {mode}."
    return (f":white_check_mark: PeerAuthentication `{namespace}/{name}`: mTLS "
            f"{before or 'unset'} → {mode}.")
