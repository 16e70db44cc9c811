"""Alert threads: an Alertmanager group as a Slack thread.

Pure functions: facts in, Slack mrkdwn out. Every message carries its essentials in ``text``,
names people as ``<@U…>`` and writes weights as ``stable 90 / canary 10``.
"""

from __future__ import annotations

from collections.abc import Sequence

from rendering.common import (
    who,
)


def alert_thread(service: str, status: str, alerts: Sequence[Sequence[str]],
                 rollout: Sequence[str], rollback_emoji: str) -> str:
    """The alert thread's root: what fires, the rollout in progress, what to do."""
    icon = ":white_check_mark:" if status == "resolved" else ":rotating_light:"
    state = "RESOLVED" if status == "resolved" else "FIRING"
    lines = [f"{icon} *Alert {state}* for `{service}` ({len(alerts)} alert"
             f"{'' if len(alerts) == 1 else 's'})"]
    for alert in alerts:
        lines += [f"• {alert[0]}", *(f"    {detail}" for detail in alert[1:])]
    lines += list(rollout) or ["Rollout in progress: none"]
    if status != "resolved":
        lines.append(f"Commands: `/mesh rollback {service}`, `/mesh status {service}`; or react "
                     f"to this message with :{rollback_emoji}: to roll back.")
    return "\n".join(lines)


def alert_update(status: str, alerts: Sequence[Sequence[str]]) -> str:
    if status == "resolved":
        return ":white_check_mark: Resolved: " + "; ".join(a[0] for a in alerts)
    return ":rotating_light: Update: " + "; ".join(a[0] for a in alerts)


def alert_rollback_started(by: str, service: str) -> str:
    return f":rewind: {who(by)} asked for a rollback of `{service}` from this alert."


def alert_rollback_refused(service: str, reason: str) -> str:
    return f"the rollback of `{service}` from the alert was refused: {reason}"
