"""Every piece of user-facing Slack text meshbot writes, as small pure functions.

Messages carry their essentials in plain ``text`` (Block Kit may only add layout), name people as
``<@U…>`` and write weights as ``stable 90 / canary 10``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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


def rollback_root(service: str, namespace: str, requester: str, reason: str) -> str:
    who = user(requester) if requester else "meshbot"
    return f":rewind: *Rollback* `{service}` ({namespace}) by {who}: {reason}"


def rolled_back(before: tuple[int, int], names: tuple[str, str]) -> str:
    return (f":rewind: Rolled back: all traffic on {names[0]} — {weights(100, 0, *names)} "
            f"(was {weights(before[0], before[1], *names)})")


def already_stable(names: tuple[str, str]) -> str:
    return f"Nothing to roll back: traffic is already {weights(100, 0, *names)}."


def status(service: str, namespace: str, current: tuple[int, int], names: tuple[str, str],
           phase: str | None, detail: Sequence[str]) -> str:
    lines = [f":bar_chart: *Status* `{service}` ({namespace}): {weights(*current, *names)}",
             f"Rollout: {phase.replace('_', ' ') if phase else 'none'}"]
    lines += list(detail)
    return "\n".join(lines)


def failed(command: Command, reason: str) -> str:
    return f":x: `{describe(command)}` failed: {reason}"


def gave_up(command: Command, reason: str, attempts: int) -> str:
    return f":x: `{describe(command)}` gave up after {attempts} attempts: {reason}"


def stopped_by_rollback(service: str) -> str:
    return f":rewind: `{service}` was rolled back meanwhile; this change was not applied."


def verb_usage_line(verb: Verb, usage: str) -> str:
    return f"`{usage}`"
