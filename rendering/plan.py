"""A plan in words: what a dry run shows and an approval request repeats."""

from __future__ import annotations

import json
from typing import Any

from meshbot.plan import ABSENT, Action, ObjectChange, Plan
from rendering.common import clip

MAX_FIELDS = 12  # per object; the rest are counted
MAX_VALUE = 80  # characters of one value
MAX_BLOCK = 3000  # characters of the code block: the message stays well inside Slack's limit


def _value(value: Any) -> str:
    if value is ABSENT:
        return "(none)"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def object_lines(change: ObjectChange) -> list[str]:
    head = f"{change.action.value} {change.kind} {change.namespace}/{change.name}"
    if change.action is not Action.UPDATE:
        return [head]
    fields = change.fields
    lines = [head] + [f"    {f.path}: {_value(f.before)} → {_value(f.after)}"
                      for f in fields[:MAX_FIELDS]]
    if len(fields) > MAX_FIELDS:
        lines.append(f"    … and {len(fields) - MAX_FIELDS} more fields")
    return lines


def plan_block(plan: Plan) -> str:
    """The object changes as one code block (Slack shows it verbatim), then the other steps."""
    parts: list[str] = []
    effective = plan.effective
    if effective:
        body = "\n".join(line for change in effective for line in object_lines(change))
        body = clip(body.replace("```", "'''"), MAX_BLOCK)
        parts.append(f"```\n{body}\n```")
    else:
        parts.append("No object would change.")
    parts += [f"• {step}" for step in plan.steps]
    return "\n".join(parts)


def dry_run_reply(what: str, plan: Plan) -> str:
    """The reply to ``… dry-run``: the plan, and that nothing was changed."""
    return (f":mag: Dry run of `{what}` — nothing was changed, no lock taken, no approval "
            f"needed. It would:\n{plan_block(plan)}")


def approval_plan(plan: Plan) -> str:
    return f"What will be written once approved:\n{plan_block(plan)}"
