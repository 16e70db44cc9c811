"""A running canary moved to another weight, and what refuses a canary or a promote at once
(before any approver is asked): a rollout in the way, no SLO evidence yet.

Pure functions: facts in, Slack mrkdwn out. Every message carries its essentials in ``text``,
names people as ``<@U…>`` and writes weights as ``stable 90 / canary 10``.
"""

from __future__ import annotations

from collections.abc import Sequence

from rendering.common import people, phase_name, user, weights, when

_WHEN_PROMOTED = "a rollout is promoted once its last step passed, a canary once a check passed"


def rollout_in_the_way(service: str, phase: object, requested_by: str) -> str:
    return (f"{service} already has a rollout {phase_name(phase)} (requested by "
            f"{user(requested_by)}): a running canary can be moved with `/mesh canary`, a "
            f"stepped or paused rollout cannot; `/mesh rollback {service}` or `/mesh promote` "
            "it first")


def already_at(service: str, percent: int) -> str:
    return f"{service}'s canary is at {percent} % already; nothing to change"


def move_to_zero(service: str) -> str:
    return (f"a canary moved to 0 % is a rollback: `/mesh rollback {service}` (it needs no "
            "approval)")


def no_rollout_to_promote(service: str) -> str:
    return (f"{service} has no rollout to promote: start one with `/mesh rollout {service}` "
            f"or `/mesh canary {service} <percent>`")


def no_evidence_yet(service: str, phase: object, next_check_at: float) -> str:
    name = phase_name(phase)
    if name == "paused":
        return (f"{service} is paused: `/mesh resume {service}` first; {_WHEN_PROMOTED}")
    if name == "awaiting approval":
        return (f"{service}'s next step waits for approval; {_WHEN_PROMOTED}")
    return (f"{service} has no SLO evidence to promote on yet ({name}): {_WHEN_PROMOTED}; "
            f"next check {when(next_check_at)}. Ask again once it passed.")


def changed_while_moving(service: str) -> str:
    return f"{service}'s rollout changed while moving it; see `/mesh status {service}`"


def canary_moved(was: int, now: int, before: tuple[int, int], after: tuple[int, int],
                 names: tuple[str, str], requester: str, approvers: Sequence[str]) -> str:
    by = f", approved by {people(approvers)}" if approvers else ""
    return (f":left_right_arrow: Canary moved from {was} % to {now} % by {user(requester)}"
            f"{by}: now {weights(*after, *names)} (was {weights(*before, *names)}). Its checks "
            "go on at the new weight (a new baseline; a promote needs a passed check here).")


def move_detail(was: int, now: int) -> str:
    """The audit entry's detail."""
    return f"moved from {was} % to {now} %"
