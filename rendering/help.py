"""`/mesh help`: the commands the caller may run here.

Pure functions: facts in, Slack mrkdwn out. Every message carries its essentials in ``text``,
names people as ``<@U…>`` and writes weights as ``stable 90 / canary 10``.
"""

from __future__ import annotations

from collections.abc import Sequence


def help_text(verbs: Sequence[str], usages: dict[str, str]) -> str:
    if not verbs:
        return "You may not run any /mesh command in this channel."
    lines = ["*/mesh commands you may run here:*"]
    lines += [f"• `{usages[v]}`" for v in verbs if v in usages]
    return "\n".join(lines)
