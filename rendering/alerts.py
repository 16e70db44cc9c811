"""Alert threads: an Alertmanager group as a Slack thread.

Pure functions: facts in, Slack mrkdwn out. Every message carries its essentials in ``text``,
names people as ``<@U…>`` and writes weights as ``stable 90 / canary 10``.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshbot.alerts import Alert
from rendering.common import clip, escape, who

SHOWN_ANNOTATIONS = ("summary", "description", "value", "runbook_url")
SHOWN_LABELS = ("severity", "namespace", "destination_workload_namespace", "destination_version")
# Alertmanager's payloads are outside text of any size: keep what Slack shows readable (and
# far below the 40,000 characters chat.postMessage accepts).
MAX_VALUE = 300
MAX_ALERTS = 20
MAX_MESSAGE = 3_900


def _shown(value: str) -> str:
    return escape(clip(value, MAX_VALUE))


def alert_lines(alert: Alert) -> list[str]:
    """An alert as the thread shows it: name, state and since when, then its values."""
    name = _shown(alert.labels.get("alertname", "alert"))
    state = "resolved" if alert.status == "resolved" else "firing"
    head = f"*{name}* {state}"
    if alert.starts_at:
        head += f" since {_shown(alert.starts_at)}"
    if state == "resolved" and alert.ends_at:
        head += f", ended {_shown(alert.ends_at)}"
    lines = [head]
    lines += [f"{key}: {_shown(alert.annotations[key])}" for key in SHOWN_ANNOTATIONS
              if alert.annotations.get(key)]
    lines += [f"{_shown(key)}: {_shown(value)}" for key, value in sorted(alert.annotations.items())
              if key not in SHOWN_ANNOTATIONS]
    labels = [f"{key}={_shown(alert.labels[key])}" for key in SHOWN_LABELS
              if alert.labels.get(key)]
    if labels:
        lines.append("labels: " + ", ".join(labels))
    return lines


def alert_thread(service: str, status: str, alerts: Sequence[Sequence[str]],
                 rollout: Sequence[str], rollback_emoji: str) -> str:
    """The alert thread's root: what fires, the rollout in progress, what to do."""
    icon = ":white_check_mark:" if status == "resolved" else ":rotating_light:"
    state = "RESOLVED" if status == "resolved" else "FIRING"
    service = _shown(service)
    lines = [f"{icon} *Alert {state}* for `{service}` ({len(alerts)} alert"
             f"{'' if len(alerts) == 1 else 's'})"]
    for alert in alerts[:MAX_ALERTS]:
        lines += [f"• {alert[0]}", *(f"    {detail}" for detail in alert[1:])]
    if len(alerts) > MAX_ALERTS:
        lines.append(f"… and {len(alerts) - MAX_ALERTS} more (see Alertmanager)")
    tail = list(rollout) or ["Rollout in progress: none"]
    if status != "resolved":
        tail.append(f"Commands: `/mesh rollback {service}`, `/mesh status {service}`; or react "
                    f"to this message with :{rollback_emoji}: to roll back.")
    # The commands stay whole; the alerts give way if the whole would be too long.
    body = clip("\n".join(lines), MAX_MESSAGE - sum(len(line) + 1 for line in tail))
    return "\n".join([body, *tail])


def alert_update(status: str, alerts: Sequence[Sequence[str]]) -> str:
    names = clip("; ".join(a[0] for a in alerts), MAX_MESSAGE)
    if status == "resolved":
        return ":white_check_mark: Resolved: " + names
    return ":rotating_light: Update: " + names


def alert_rollback_started(by: str, service: str) -> str:
    return f":rewind: {who(by)} asked for a rollback of `{service}` from this alert."


def alert_rollback_refused(service: str, reason: str) -> str:
    return f"the rollback of `{service}` from the alert was refused: {reason}"
