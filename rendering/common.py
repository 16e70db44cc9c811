"""The small words every message shares: people, weights, times, counts.

Pure functions: facts in, Slack mrkdwn out. Every message carries its essentials in ``text``,
names people as ``<@U…>`` and writes weights as ``stable 90 / canary 10``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from meshbot.commands import Command, Verb
from meshbot.slack_text import clip as clip
from meshbot.slack_text import escape as escape


def user(user_id: str) -> str:
    return f"<@{user_id}>"


def weights(stable: int, canary: int, stable_name: str = "stable",
            canary_name: str = "canary") -> str:
    return f"{stable_name} {stable} / {canary_name} {canary}"


def weight_change(before: tuple[int, int], after: tuple[int, int],
                  names: tuple[str, str] = ("stable", "canary")) -> str:
    return (f"{names[0]} {before[0]}→{after[0]} / {names[1]} {before[1]}→{after[1]}")


_OPTIONS_SHOWN = frozenset({Verb.AUTHZ, Verb.MIGRATE, Verb.MIRROR})


def describe(command: Command) -> str:
    """The command as the caller typed it, normalised."""
    parts = ["/mesh", command.verb.value]
    if command.target:
        parts.append(command.target)
    if command.percent is not None:
        parts.append(str(command.percent))
    if command.switch:
        parts.append(command.switch)
    if command.verb is Verb.AB and "header" in command.options:
        parts.append(f"header={command.options['header']}:{command.options.get('value', '')}")
    elif command.verb is Verb.AUDIT and command.options.get("n", "10") != "10":
        parts.append(command.options["n"])
    elif command.verb in _OPTIONS_SHOWN:  # what it allows, removes or runs is in its options
        parts += [v if k == "name" else f"{k}={v}" for k, v in command.options.items()]
    if command.steps:
        parts.append("steps=" + ",".join(str(s) for s in command.steps))
    if command.interval_s is not None:
        parts.append(f"interval={command.interval_s:g}s")
    if command.cluster:
        parts.append(f"cluster={command.cluster}")
    if command.dry_run:
        parts.append("dry-run")
    return " ".join(parts)


def phase_name(phase: Any) -> str:
    return str(getattr(phase, "value", phase)).replace("_", " ")


def _values(lines: Sequence[str]) -> str:
    return "; ".join(lines) if lines else "no measurements"


def when(epoch: float) -> str:
    """A moment as Slack renders it in the reader's time zone, with a UTC fallback in ``text``."""
    fallback = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))
    return f"<!date^{int(epoch)}^{{date_short_pretty}} {{time_secs}}|{fallback}>"


def duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def member(member_id: str) -> str:
    """A user (``<@U…>``) or a user group (``<!subteam^S…>``), as Slack renders them."""
    return f"<!subteam^{member_id}>" if member_id.startswith("S") else f"<@{member_id}>"


def who(actor: str) -> str:
    """Slack users as mentions; anything else (``shell:alice``, ``meshbot``) as written."""
    return user(actor) if actor.startswith(("U", "W")) else (actor or "meshbot")


def people(ids: Sequence[str]) -> str:
    names = [member(i) for i in ids]
    if len(names) <= 1:
        return "".join(names) or "nobody"
    return ", ".join(names[:-1]) + " and " + names[-1]


_PLURALS = {"VirtualService": "VirtualServices", "DestinationRule": "DestinationRules",
            "Gateway": "Gateways", "PeerAuthentication": "PeerAuthentications",
            "AuthorizationPolicy": "AuthorizationPolicies"}


def kind_count(kind: str, count: int) -> str:
    return f"{count} {kind if count == 1 else _PLURALS.get(kind, kind + 's')}"


def object_counts(counts: dict[str, int]) -> str:
    return ", ".join(kind_count(kind, n) for kind, n in counts.items())


def _listed(names: Iterable[str]) -> str:
    shown = ", ".join(f"`{n}`" for n in names)
    return shown or "nothing (already as asked)"


_LINK_LABELS = {"grafana": "Grafana", "kiali": "Kiali", "jaeger": "Jaeger", "loki": "Loki"}


def links_line(links: dict[str, str]) -> str:
    """``Grafana · Kiali · …`` as Slack links; empty when the policy gives none."""
    shown = [f"<{url}|{_LINK_LABELS.get(name, name)}>" for name, url in links.items()
             if "|" not in url and ">" not in url]
    return ":link: " + " · ".join(shown) if shown else ""
