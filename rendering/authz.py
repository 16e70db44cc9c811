"""``/mesh authz``: what its refusals, threads and listing say. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rendering.common import clip, escape, user

MAX_LISTED = 30  # callers or policies shown; the rest are counted


def _more(shown: Sequence[str], total: int) -> str:
    rest = total - len(shown)
    return ", ".join(shown) + (f" and {rest} more" if rest > 0 else "")


def callers_text(cut: Sequence[tuple[str, str]]) -> str:
    # A caller is a principal from the policy or from Prometheus's labels: outside text.
    shown = [f"`{escape(service)}` ← `{escape(source)}`" for service, source in cut[:MAX_LISTED]]
    return _more(shown, len(cut))


def would_cut(command: str, cut: Sequence[tuple[str, str]]) -> str:
    return (f"`{command}` would cut traffic that no ALLOW rule admits (or limit it to some "
            f"methods or paths): {callers_text(cut)}. "
            "Allow those callers first (`allow from=<principal|namespace> to=<service>`, "
            "several callers of one service in one `from=a,b`), or add `confirm=yes` to cut "
            "them on purpose. Nothing was changed.")


def cut_on_purpose(cut: Sequence[tuple[str, str]]) -> str:
    return f":warning: Cut on purpose (`confirm=yes`): {callers_text(cut)}"


def no_callers_known(service_count: int) -> str:
    return (f":grey_question: No caller known for the {service_count} service(s) of the "
            "policy here (no `callers:` in the policy, no recent traffic in Prometheus): "
            "nothing was found that this would cut")


def prometheus_silent(reason: str) -> str:
    return (f":warning: Prometheus did not answer ({clip(reason, 200)}): only the callers the "
            "policy declares were checked")


def own_namespace(namespace: str) -> str:
    return (f"`{namespace}` is meshbot's own namespace: meshbot never changes its "
            "AuthorizationPolicies (it must stay reachable to roll the mesh back); nothing "
            "was changed")


def unknown_service(service: str, namespace: str) -> str:
    return (f"`{service}` is not a service of namespace `{namespace}` in meshbot's policy; "
            "nothing was changed")


def no_policy(namespace: str, name: str) -> str:
    return (f"there is no AuthorizationPolicy `{name}` in namespace `{namespace}` "
            f"(`/mesh authz {namespace} list` shows them); nothing was changed")


def not_managed(namespace: str, name: str) -> str:
    return (f"AuthorizationPolicy `{namespace}/{name}` was not created by meshbot (it lacks "
            "the label `app.kubernetes.io/managed-by: meshbot`): meshbot changes and removes "
            "only its own; nothing was changed")


def already(namespace: str, name: str, what: str) -> str:
    return f"AuthorizationPolicy `{namespace}/{name}` already {what}; nothing to change"


def root(namespace: str, command: str, requester: str, approvers: Sequence[str]) -> str:
    approved = f", approved by {', '.join(user(a) for a in approvers)}" if approvers else ""
    return (f":shield: *AuthorizationPolicy change* in `{namespace}`: `{command}` requested by "
            f"{user(requester)}{approved}")


def done(action: str, namespace: str, name: str) -> str:
    verb = {"create": "created", "update": "updated", "delete": "removed"}.get(action, action)
    return f":white_check_mark: AuthorizationPolicy `{namespace}/{name}` {verb}"


def summary(policy: Mapping[str, Any]) -> str:
    """One line per policy: action, which workloads, from whom, to what — as the cluster has
    it, so every value is escaped (a path or principal is free text)."""
    spec = policy.get("spec") or {}
    if not spec:
        return "deny-all (every workload, nobody admitted)"
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    where = ", ".join(f"{escape(str(k))}={escape(str(v))}" for k, v in sorted(labels.items())) \
        or "every workload"
    action = escape(str(spec.get("action", "ALLOW")))
    rules = spec.get("rules") or []
    if not rules:
        return f"{action} {where}: no rule"
    parts = []
    for rule in rules[:3]:
        sources = [escape(str(s)) for o in rule.get("from") or []
                   for key in ("principals", "namespaces")
                   for s in (o.get("source") or {}).get(key) or []]
        ops = [o.get("operation") or {} for o in rule.get("to") or []]
        methods = [escape(str(m)) for o in ops for m in o.get("methods") or []]
        paths = [escape(str(p)) for o in ops for p in o.get("paths") or []]
        text = "from " + (", ".join(sources) or "anyone")
        if methods or paths:
            text += " to " + " ".join(filter(None, (",".join(methods), ",".join(paths))))
        if rule.get("when"):
            text += " (with conditions)"
        parts.append(text)
    more = f" (+{len(rules) - 3} rules)" if len(rules) > 3 else ""
    return f"{action} {where}: " + "; ".join(parts) + more


def listing(namespace: str, rows: Sequence[tuple[str, bool, str]]) -> str:
    if not rows:
        return (f":shield: No AuthorizationPolicy in `{namespace}`: every workload admits every "
                "caller")
    lines = [f"• `{name}`{' :robot_face: meshbot' if mine else ''} — {clip(text, 200)}"
             for name, mine, text in rows[:MAX_LISTED]]
    if len(rows) > MAX_LISTED:
        lines.append(f"… and {len(rows) - MAX_LISTED} more")
    return (f":shield: AuthorizationPolicies in `{namespace}` (:robot_face: = meshbot's own, "
            "the only ones `remove` takes):\n" + "\n".join(lines))
