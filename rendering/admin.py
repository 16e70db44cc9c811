"""Locks and the change freeze.

Pure functions: facts in, Slack mrkdwn out. Every message carries its essentials in ``text``,
names people as ``<@U…>`` and writes weights as ``stable 90 / canary 10``.
"""

from __future__ import annotations

from collections.abc import Sequence

from rendering.common import (
    people,
    when,
    who,
)


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


def state_vanished(at: float) -> str:
    return (f":rotating_light: *meshbot lost its state*: Redis came back empty at {when(at)} "
            "(restarted without persistence, or flushed). Rollouts, approvals, locks and audit "
            "entries from before are gone and nothing is watching them: check each service "
            "with `/mesh status <service>` and start again what must go on. Run Redis with "
            "AOF so this cannot happen.")
