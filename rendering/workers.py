"""What a request's thread hears about meshbot's own workers: one that stopped mid-command.

Pure functions: facts in, Slack mrkdwn out. Each says only what meshbot observed: the worker's
lease lapsed (it stopped answering), and the command was put back on the queue for another
worker; not what the stopped worker had done, nor what the next one will find.
"""

from __future__ import annotations

from meshbot.commands import Command
from rendering.common import describe


def taken_over(command: Command) -> str:
    """A started job whose worker stopped: requeued for another worker."""
    return (f":arrows_counterclockwise: The meshbot worker running `{describe(command)}` "
            "stopped before finishing it; another worker is taking the command over.")


def taken_over_unstarted(command: Command) -> str:
    """A job its worker took from the queue and never started: put back on the queue."""
    return (f":arrows_counterclockwise: The meshbot worker that took `{describe(command)}` "
            "from the queue stopped before starting it; the command is back on the queue for "
            "another worker.")
