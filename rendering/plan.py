"""A plan in words: what a dry run shows and an approval request repeats."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from meshbot.plan import ABSENT, Action, ObjectChange, Plan
from rendering.common import clip, escape

MAX_FIELDS = 12  # per object; the rest are counted
MAX_VALUE = 80  # characters of one value
MAX_SUMMARY = 600  # characters of the one-line summary
MAX_BLOCK = 3000  # characters of the code block: the message stays well inside Slack's limit


def _value(value: Any) -> str:
    """A live or planned value (free text from the cluster: an annotation, a path), shown
    literally."""
    if value is ABSENT:
        return "(none)"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return escape(text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…")


def _where(change: ObjectChange) -> str:
    # A Namespace is cluster-scoped: its name alone.
    return f"{change.namespace}/{change.name}" if change.namespace else change.name


def object_lines(change: ObjectChange) -> list[str]:
    head = f"{change.action.value} {change.kind} {_where(change)}"
    if change.action not in (Action.UPDATE, Action.CREATE):
        return [head]  # a deletion: the whole object goes
    fields = change.fields
    lines = [head] + [f"    {escape(f.path)}: {_value(f.before)} → {_value(f.after)}"
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


def plan_summary(plan: Plan, limit: int = MAX_SUMMARY) -> str:
    """One line of every field the plan writes: the audit's detail, and the approval's fact
    (at quorum a different summary means approvers said yes to something else). Past
    ``limit`` it is cut, with a digest of the whole so two different plans still differ."""
    parts = []
    for change in plan.effective:
        if change.action is Action.UPDATE:
            fields = ", ".join(f"{escape(f.path)} {_value(f.before)}→{_value(f.after)}"
                               for f in change.fields)
            parts.append(f"{change.kind} {_where(change)}: {fields}")
        else:
            parts.append(f"{change.action.value} {change.kind} {_where(change)}")
    text = "; ".join(parts) or "no object changes"
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{text[: limit - 16]}… #{digest}"


# --- the steps that are not an object write, verb by verb ------------------------------------

def rollout_steps(steps: tuple[int, ...], interval_s: float, fixed: bool,
                  deadline_s: float) -> tuple[str, ...]:
    first = f"store the rollout and open its thread; the analysis checks every {interval_s:g}s"
    if fixed:
        return (first, f"the canary stays at {steps[0]}% (an automatic rollback if a check "
                       "fails) until promoted, moved or rolled back")
    later = " → ".join(f"{s}%" for s in steps[1:])
    then = (f"then {later}, each step once its analysis passes; an automatic rollback if one "
            "fails" if later else "no further step: promote it once its analysis passed")
    return (first, then, f"a step without data for {deadline_s:g}s alerts")


def promote_step(service: str, canary: str) -> str:
    return f"{service}'s rollout ends promoted: subset `{canary}` becomes the live one"


def rollout_marked(service: str, phase: str) -> str:
    return (f"{service}'s rollout is marked {phase.replace('_', ' ')} first: a job still writing "
            "its weight stops")


def rollout_state(service: str, before: str, after: str, weight: int) -> str:
    return (f"{service}'s rollout: {before.replace('_', ' ')} → {after.replace('_', ' ')}, at "
            f"{weight}%")


def canary_moved(service: str, was: int, now: int) -> str:
    return (f"{service}'s running canary moves {was}% → {now}%: the same rollout and thread, its "
            f"checks going on at {now}% from a new baseline")


def pods_roll(deployment: str, replicas: int) -> str:
    return (f"Kubernetes then replaces Deployment {deployment}'s pods ({replicas} replicas), each "
            "new one with a sidecar")


def emergency_backup(namespace: str) -> str:
    return (f"first, a backup of {namespace}'s mesh configuration (`/mesh restore` puts it "
            "back)")


def emergency_restarts(deployments: list[str]) -> str:
    if not deployments:
        return "no Deployment to restart"
    return ("then restart its Deployments one at a time, each once the previous rollout is "
            f"complete and its PodDisruptionBudget allows: {', '.join(deployments)}")


def namespace_pods(namespace: str) -> str:
    return (f"pods created in {namespace} from then on get a sidecar; running pods keep theirs "
            "(or none) until restarted")


def tls_kept(rule: str, mode: str) -> str:
    return f"DestinationRule {rule} keeps its TLS origination ({mode}): not made ISTIO_MUTUAL"
