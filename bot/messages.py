"""Every piece of user-facing Slack text meshbot writes, as small pure functions.

Messages carry their essentials in plain ``text`` (Block Kit may only add layout), name people as
``<@U…>`` and write weights as ``stable 90 / canary 10``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
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
