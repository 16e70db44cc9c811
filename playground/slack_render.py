"""Print a Slack thread the way a person reads it (``make demo`` shows this in a terminal).

Only ``text`` is rendered, never the blocks: meshbot puts every essential in ``text``, so if
the demo reads well here, a notification or a screen reader reads it well too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from playground.slack_model import Message

_MENTION = re.compile(r"<([@#!])([^>|]+)(?:\|([^>]*))?>")
_LINK = re.compile(r"<((?:https?|mailto):[^>|]+)(?:\|([^>]*))?>")


def readable(text: str, users: Mapping[str, str], channels: Mapping[str, str]) -> str:
    """Turn Slack's mrkdwn references (``<@U1>``, ``<#C1>``, links) into what Slack shows."""

    def mention(match: re.Match[str]) -> str:
        sigil, ref, label = match.group(1), match.group(2), match.group(3)
        if sigil == "@":
            return "@" + (label or users.get(ref, ref))
        if sigil == "#":
            return "#" + (label or channels.get(ref, ref))
        # <!here>, <!channel>, <!subteam^S1|@oncall>
        return label or "@" + ref.split("^")[0]

    def link(match: re.Match[str]) -> str:
        url, label = match.group(1), match.group(2)
        return f"{label} ({url})" if label else url

    text = _LINK.sub(link, _MENTION.sub(mention, text))
    # Slack escapes only these three; unescape last so they cannot form new references.
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def clock_time(ts: str) -> str:
    return datetime.fromtimestamp(float(ts), UTC).strftime("%H:%M:%S")


def render_message(
    message: Message,
    users: Mapping[str, str],
    channels: Mapping[str, str],
    indent: str = "",
) -> list[str]:
    author = users.get(message.user, message.user)
    head = f"{indent}[{clock_time(message.ts)}] {author}: "
    body = readable(message.text, users, channels).splitlines() or [""]
    pad = " " * len(head)
    lines = [head + body[0], *(pad + line for line in body[1:])]
    notes = []
    if message.edits:
        notes.append(f"(edited {message.edits}x)")
    for name, who in message.reactions.items():
        names = ", ".join("@" + users.get(u, u) for u in who)
        notes.append(f":{name}: {len(who)} ({names})")
    if notes:
        lines.append(pad + "  ".join(notes))
    return lines


def render_thread(
    thread: Sequence[Message],
    *,
    users: Mapping[str, str],
    channels: Mapping[str, str],
) -> str:
    """``thread`` is the root then its replies, as ``SlackWorkspace.thread`` returns them."""
    if not thread:
        return ""
    root, replies = thread[0], thread[1:]
    channel = channels.get(root.channel, root.channel)
    lines = [f"#{channel}  thread {root.ts}", *render_message(root, users, channels, "  ")]
    for reply in replies:
        lines.extend(render_message(reply, users, channels, "    ↳ "))
    return "\n".join(lines)
