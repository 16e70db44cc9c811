"""What only the caller sees (ephemeral): refusals, acceptance, failures.

Pure functions: facts in, Slack mrkdwn out. Every message carries its essentials in ``text``,
names people as ``<@U…>`` and writes weights as ``stable 90 / canary 10``.
"""

from __future__ import annotations

from meshbot.commands import Command
from rendering.common import (
    describe,
)


def refused(reason: str) -> str:
    return f":no_entry: Refused: {reason}"


def accepted(command: Command) -> str:
    if command.dry_run:
        return (f":mag: Accepted `{describe(command)}` — working out the plan; nothing will "
                "change.")
    return f":hourglass_flowing_sand: Accepted `{describe(command)}` — working on it."


def no_dry_run(command: Command) -> str:
    return (f"`/mesh {command.verb.value}` cannot show its plan yet, so its dry run was not "
            "carried out; nothing was changed.")


def needs_approval(command: Command, reason: str) -> str:
    return (f":hourglass_flowing_sand: Accepted `{describe(command)}`, pending approval: {reason} "
            "The request is posted in the channel for approvers to react on.")


def duplicate(command: Command) -> str:
    return f"`{describe(command)}` was already received; it runs once."


def failed(command: Command, reason: str) -> str:
    return f":x: `{describe(command)}` failed: {reason}"


def gave_up(command: Command, reason: str, attempts: int) -> str:
    return f":x: `{describe(command)}` gave up after {attempts} attempts: {reason}"


def stopped_by_rollback(service: str) -> str:
    return f":rewind: `{service}` was rolled back meanwhile; this change was not applied."


def groups_unread(groups: list[str]) -> str:
    """Why a refusal may be wrong: the caller's user groups could not be looked up."""
    named = ", ".join(f"<!subteam^{g}>" for g in groups)
    return (f"(Slack could not be asked about your user groups — {named} — so they were not "
            "counted; try again in a minute.)")


def queue_unavailable() -> str:
    return (":warning: meshbot cannot reach its queue (Redis); nothing was done — try again "
            "in a minute. If it persists, tell whoever runs meshbot.")


def unreadable(verb: str | None, target: str | None) -> str:
    """A request this worker's meshbot cannot read: most often one a newer meshbot accepted
    while the workers were still being upgraded. Named as far as it could be read."""
    named = " ".join(["/mesh", *(part for part in (verb, target) if part)])
    shown = f"`{named}`" if verb else "Your command"
    return (f":warning: {shown} was not run: this meshbot worker cannot read it (it names "
            "something this version does not know, as a newer meshbot's request does during an "
            "upgrade). Nothing was done — send it again once the upgrade has finished.")


def overtaken(command: Command) -> str:
    return (f":rewind: `{describe(command)}` was not applied: a rollback of `{command.target}` "
            "was accepted after it, and a rollback wins.")


def overtaken_undone(command: Command, stable: str, canary: str) -> str:
    """A rollback accepted after ``command`` came while its write was on the wire: the write
    landed (perhaps after the rollback had found nothing to write), so it was written back."""
    return (f":rewind: `{describe(command)}` was overtaken: a rollback of `{command.target}` "
            "was accepted after it, and a rollback wins. Its write had already reached the "
            f"VirtualService, so meshbot put it back to {stable} 100 / {canary} 0.")
