"""`/mesh audit`: the audit log as people read it.

Pure functions: facts in, Slack mrkdwn out. Every message carries its essentials in ``text``,
names people as ``<@U…>`` and writes weights as ``stable 90 / canary 10``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rendering.common import (
    people,
    when,
    who,
)


class AuditLike(Protocol):
    """What an audit line shows (structural: the bot does not import jobs)."""

    @property
    def at(self) -> float: ...
    @property
    def actor(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def before(self) -> str | None: ...
    @property
    def after(self) -> str | None: ...
    @property
    def approvers(self) -> tuple[str, ...]: ...
    @property
    def permalink(self) -> str | None: ...
    @property
    def detail(self) -> str: ...


def audit_line(entry: AuditLike) -> str:
    parts = [f"• {when(entry.at)} {who(entry.actor)} {entry.action} — {entry.outcome}"]
    if entry.before or entry.after:
        parts.append(f"{entry.before or '?'} → {entry.after or '?'}")
    if entry.approvers:
        parts.append(f"approved by {people(entry.approvers)}")
    if entry.detail:
        parts.append(entry.detail)
    if entry.permalink:
        parts.append(f"<{entry.permalink}|link>")
    return "; ".join(parts)


def audit_list(target: str, entries: Sequence[AuditLike], count: int) -> str:
    if not entries:
        return f":ledger: *Audit* `{target}`: no entries yet."
    head = f":ledger: *Audit* `{target}`: last {len(entries)} of at most {count}, newest first"
    return "\n".join([head, *(audit_line(e) for e in entries)])
