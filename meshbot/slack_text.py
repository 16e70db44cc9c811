"""Text for Slack: outside text shown literally, and messages within Slack's limits.

Both the renderers (``rendering``) and the one place workers write to Slack
(``jobs.adapters.slack_notifier``) use these, so there is one escape and one cut.
"""

from __future__ import annotations

MAX_TEXT = 40_000  # chat.postMessage, chat.update, chat.postEphemeral: a message's ``text``
MAX_SECTION = 3_000  # a section block's ``text``


def escape(text: str) -> str:
    """Outside text (alert labels, annotations, the cluster's free-text fields, Prometheus
    labels) shown literally: Slack's three control characters escaped, so no ``<!channel>``
    ping, mention or link can ride in on it."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int, where: str = "") -> str:
    """At most ``limit`` characters, saying how much was cut (and ``where`` the rest is)."""
    if len(text) <= limit:
        return text
    note = f"… ({len(text) - limit:,} characters cut{'; ' + where if where else ''})"
    return text[: max(0, limit - len(note))] + note
