"""Every piece of user-facing Slack text meshbot writes, as small pure functions.

Messages carry their essentials in plain ``text`` (Block Kit may only add layout), name people as
``<@U…>`` and write weights as ``stable 90 / canary 10``.
"""

from __future__ import annotations

from meshbot.commands import Command
from rendering.common import (
    describe,
)


def refused(reason: str) -> str:
    return f":no_entry: Refused: {reason}"

def accepted(command: Command) -> str:
    return f":hourglass_flowing_sand: Accepted `{describe(command)}` — working on it."

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
