"""Telling a rollout's thread what happened, even when Slack is away right now."""

from __future__ import annotations

import logging

from jobs.adapters.slack_outbox import Outbox
from jobs.runtime.context import JobContext
from meshbot.errors import TemporaryError

log = logging.getLogger("meshbot.reports")


def report(ctx: JobContext, channel: str, thread_ts: str, text: str) -> bool:
    """Post ``text`` into the thread now, or owe it (delivered by the ticker, in order, when
    Slack is back). True if it went out now."""
    outbox = Outbox(ctx.redis)
    if outbox.owes(channel, thread_ts):
        outbox.owe(channel, thread_ts, text)  # behind what the thread already waits for
        return False
    try:
        ctx.notifier.reply(channel, thread_ts, text)
    except TemporaryError as exc:
        log.warning("Slack did not take a report for %s/%s (%s): it is kept and will be "
                    "delivered", channel, thread_ts, exc.message)
        outbox.owe(channel, thread_ts, text)
        return False
    return True


def deliver_owed(ctx: JobContext) -> int:
    return Outbox(ctx.redis).deliver(ctx.notifier)
