"""Approval requests, their progress and outcome, and the plans approvers read.

Pure functions: facts in, Slack mrkdwn out. Every message carries its essentials in ``text``,
names people as ``<@U…>`` and writes weights as ``stable 90 / canary 10``.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshbot.commands import Command, Verb
from rendering.common import (
    describe,
    duration,
    member,
    people,
    user,
    weight_change,
    when,
    who,
)


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
    if command.verb is Verb.MIGRATE and command.options.get("what"):
        return f"the migration goes on: {command.options['what']}"
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


def waiting_busy(service: str, holder: str, what: str, since: float) -> str:
    return (f"{service} is busy ({who(holder)} `{what}` since {when(since)}); runs when it is "
            "free")


def waiting_frozen(holder: str, since: float) -> str:
    return (f"changes are frozen ({who(holder)} froze them since {when(since)}); runs when the "
            "freeze is lifted")


def approval_waiting(approvals: Sequence[str], waiting_for: str, expires_at: float) -> str:
    return (f":hourglass_flowing_sand: Approved by {people(approvals)}; waiting: {waiting_for}, "
            f"until the request expires {when(expires_at)}. The approvals are kept.")


def approval_expired_waiting(ttl_s: float, approvals: Sequence[str], waiting_for: str) -> str:
    return (f":hourglass: Expired while waiting ({waiting_for}): approved by {people(approvals)}, "
            f"but it could not run within {duration(ttl_s)} of the request; the approvals were "
            "not used and nothing was changed. Run the command again if still wanted.")


def approval_not_used(approvals: Sequence[str], reason: str) -> str:
    return (f":no_entry: Not run: {reason.rstrip('.')}. The approvals of {people(approvals)} "
            "were not used; nothing was changed.")


def overtaken(service: str | None) -> str:
    return f"a rollback of `{service}` was accepted after it, and a rollback wins"


def migrating(service: str, namespace: str, requester: str) -> str:
    return (f"`{service}` is being moved onto the mesh by the migration of `{namespace}` "
            f"(started by <@{requester}>): try again once it has moved on (or stop it with "
            f"`/mesh migrate {namespace} abort`).")


def waiting_migrating(service: str, namespace: str) -> str:
    return f"the migration of `{namespace}` to move on from `{service}`"
