"""Telling a rollout's thread what happened, even when Slack is away right now."""

from __future__ import annotations

import logging
from collections.abc import Callable

from jobs.adapters.slack_outbox import Outbox
from jobs.runtime.context import JobContext
from meshbot.errors import TemporaryError

log = logging.getLogger("meshbot.reports")


def report(ctx: JobContext, channel: str, thread_ts: str, text: str) -> bool:
    """Post ``text`` into the thread now, or owe it (delivered by the ticker, in order, when
    Slack is back). True if it went out now."""
    outbox = Outbox(ctx.redis)
    # One key whichever way it goes (now, or owed): a reply Slack kept while its answer was
    # lost is found by the delivery, and a job's retry owing it again is delivered once. The
    # key leaves the report's numbers out: a retry rendering it with new numbers is the same
    # report, one saying something else is another.
    key = ctx.notifier.reply_key(channel, thread_ts, text)
    if outbox.owes(channel, thread_ts):
        # Behind what the thread already waits for.
        outbox.owe(channel, thread_ts, text, label=ctx.notifier.label, key=key)
        return False
    try:
        ctx.notifier.reply(channel, thread_ts, text, key=key)
    except TemporaryError as exc:
        log.warning("Slack did not take a report for %s/%s (%s): it is kept and will be "
                    "delivered", channel, thread_ts, exc.message)
        outbox.owe(channel, thread_ts, text, label=ctx.notifier.label, key=key)
        return False
    return True


def announce(ctx: JobContext, channel: str, text: str, key: str) -> str | None:
    """Post ``text`` as a channel message of its own (an alert) now, or owe it when Slack does
    not take it now. Posted once per ``key``, whichever way it goes. Its ts if it went out now.

    Said after the mesh (or meshbot's own state) changed: Slack being away must neither lose
    it nor undo, or leave unsettled, what was done."""
    try:
        return ctx.notifier.post_root(channel, text, key=key)
    except TemporaryError as exc:
        log.warning("Slack did not take an alert in %s (%s): it is kept and will be "
                    "delivered", channel, exc.message)
        Outbox(ctx.redis).owe_root(channel, text, label=ctx.notifier.label, key=key)
        return None


def report_in_new_thread(ctx: JobContext, channel: str, root: str, text: str,
                         post_root: Callable[[], str]) -> str | None:
    """Start a thread with ``post_root`` (which posts ``root`` in ``channel``) and report
    ``text`` in it; when Slack does not take the root now, both are owed to the channel and
    the ticker posts them when Slack is back. The thread's ts, or None while it is owed."""
    try:
        ts = post_root()
    except TemporaryError as exc:
        log.warning("Slack did not take a thread root in %s (%s): it and its report are kept "
                    "and will be delivered", channel, exc.message)
        Outbox(ctx.redis).owe_root(channel, root, [text], label=ctx.notifier.label)
        return None
    report(ctx, channel, ts, text)
    return ts


def deliver_owed(ctx: JobContext) -> int:
    """Post what Slack is owed, oldest first (the ticker's duty); how many went out."""
    return Outbox(ctx.redis).deliver(ctx.notifier)
