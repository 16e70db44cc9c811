"""``/mesh authz <namespace> deny-all | allow … | list | remove <name>``: the runbook's
zero-trust AuthorizationPolicies.

A change is planned first (``prepare``), from the namespace's live policies: the approval
request, the dry run and the write all use that one plan, whose object is the very body sent.
What a change would cut — callers the policy declares, or that Prometheus saw recently, which
are admitted now and would not be after — refuses it unless ``confirm=yes``. meshbot's own
namespace is never touched, and only meshbot's own policies (its label) are changed or removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobs.adapters.kube import Obj
from jobs.adapters.kube_security import AuthorizationPolicies
from jobs.adapters.prometheus import MetricsSource
from jobs.domain import authz as domain
from jobs.domain.authz import Caller
from jobs.domain.gitops import ensure_not_gitops_owned
from jobs.domain.server_fields import resource_version
from jobs.runtime.context import JobContext
from jobs.runtime.handlers.backup import audit, require_namespace
from jobs.runtime.handlers.common import first_found, plans, request_thread, show_plan
from meshbot.commands import Request
from meshbot.errors import MetricsUnavailable, Refused
from meshbot.plan import ObjectChange, Plan, merge_patch
from rendering import authz as text
from rendering import common as words
from rendering.plan import plan_block

PROMETHEUS_TIMEOUT_S = 3.0


@dataclass
class Prepared:
    """One change: what it writes (``body`` for create, ``patch`` for update, neither for a
    delete), its plan, who it cuts, and what the thread should know besides."""

    namespace: str
    name: str
    action: str  # create | update | delete | none
    plan: Plan
    body: Obj | None = None
    patch: Obj | None = None
    cut: list[Caller] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _adapter(ctx: JobContext) -> AuthorizationPolicies:
    return AuthorizationPolicies(ctx.kube, ctx.settings.security_group_version)


def _find(policies: list[Obj], name: str) -> Obj | None:
    return next((p for p in policies if domain.name_of(p) == name), None)


def _own(existing: Obj, namespace: str, allowed: bool) -> None:
    """Only meshbot's own policy is changed, and never one a GitOps controller owns."""
    if not domain.is_managed(existing):
        raise Refused(text.not_managed(namespace, domain.name_of(existing)))
    ensure_not_gitops_owned(existing, allowed=allowed)


def _callers(ctx: JobContext, namespace: str, notes: list[str]) -> list[Caller]:
    views = [v for v in (ctx.policy.service(s) for s in ctx.policy.service_names)
             if v is not None and v.namespace == namespace]
    found = set(domain.declared_callers({v.name: v.callers for v in views}))
    try:
        with MetricsSource(ctx.settings.prometheus_url, timeout=PROMETHEUS_TIMEOUT_S) as source:
            series = source.query(domain.traffic_query(namespace))
        found |= set(domain.observed_callers(series, [v.name for v in views]))
    except MetricsUnavailable as exc:
        notes.append(text.prometheus_silent(exc.message))
    if not found:
        notes.append(text.no_callers_known(len(views)))
    return sorted(found)


def prepare(ctx: JobContext, request: Request) -> Prepared:
    """The change and its plan; ``Refused`` (nothing changed) for what must not be done."""
    command = request.command
    namespace, action = command.target or "", command.switch or ""
    if namespace == ctx.settings.namespace:
        raise Refused(text.own_namespace(namespace))
    require_namespace(ctx, namespace)
    adapter = _adapter(ctx)
    policies = adapter.list(namespace)
    allowed = ctx.policy.gitops_allowed
    body: Obj | None = None
    if action == "remove":
        name = command.options.get("name", "")
        existing = _find(policies, name)
        if existing is None:
            raise Refused(text.no_policy(namespace, name))
        _own(existing, namespace, allowed)
        after: list[Obj] = domain.replaced(policies, None, removed=name)
    else:
        if action == "deny-all":
            body = domain.deny_all_body(adapter.api_version, namespace)
            present = next((p for p in policies if domain.is_deny_all(p)), None)
            if present is not None:
                name = domain.name_of(present)
                return Prepared(namespace, name, "none", Plan(), notes=[
                    text.already(namespace, name, "denies every workload everything")])
        else:
            service = command.options.get("to", "")
            view = ctx.policy.service(service)
            if view is None or view.namespace != namespace:
                raise Refused(text.unknown_service(service, namespace))
            allowed = view.gitops_allowed
            body = domain.allow_body(
                adapter.api_version, namespace, service, command.options["from"].split(","),
                _split(command.options.get("methods")), _split(command.options.get("paths")))
        name = domain.name_of(body)
        existing = _find(policies, name)
        if existing is not None:
            _own(existing, namespace, allowed)
        after = domain.replaced(policies, body)
    notes: list[str] = []
    cut = domain.cut(_callers(ctx, namespace, notes), policies, after, body)
    if cut and command.options.get("confirm") != "yes":
        raise Refused(text.would_cut(words.describe(command), _pairs(cut)))
    if existing is None:
        return Prepared(namespace, name, "create", _plan(namespace, name, None, body), body,
                        cut=cut, notes=notes)
    if body is None:
        return Prepared(namespace, name, "delete", _plan(namespace, name, existing, None),
                        cut=cut, notes=notes)
    patch = domain.update_patch(existing, body)
    written = merge_patch(existing, patch)
    prepared = Prepared(namespace, name, "update", _plan(namespace, name, existing, written),
                        patch=patch, cut=cut, notes=notes)
    if not prepared.plan.effective:
        prepared.action = "none"
        prepared.notes.append(text.already(namespace, name, "says exactly this"))
    return prepared


def _plan(namespace: str, name: str, before: Obj | None, after: Obj | None) -> Plan:
    return Plan((ObjectChange(domain.KIND, namespace, name, before, after),))


def _split(value: str | None) -> list[str]:
    return value.split(",") if value else []


def _pairs(cut: list[Caller]) -> list[tuple[str, str]]:
    return [(c.service, c.source) for c in cut]


def _with_steps(prepared: Prepared) -> Prepared:
    """What is not an object write goes into the plan's steps, so the dry run, the approval
    request and the thread all say it: who is cut on purpose, what was checked."""
    cut = [text.cut_on_purpose(_pairs(prepared.cut))] if prepared.cut else []
    prepared.plan = Plan(prepared.plan.changes, (*cut, *prepared.notes))
    return prepared


@plans
def authz(ctx: JobContext, request: Request) -> str:
    if request.command.switch == "list":
        return _list(ctx, request)
    if request.command.dry_run:
        return show_plan(ctx, request, _with_steps(prepare(ctx, request)).plan)
    first, prepared = _as_first_attempt(ctx, request)
    ts = request_thread(ctx, request, request.channel, text.root(
        first["namespace"], words.describe(request.command), request.user,
        request.approved_by))
    ctx.notifier.reply(request.channel, ts, first["plan"])
    if prepared is not None:
        _write(ctx, prepared)
    if first["action"] != "none":
        ctx.notifier.reply(request.channel, ts,
                           text.done(first["action"], first["namespace"], first["name"]))
    audit(ctx, request, "done" if first["action"] != "none" else "unchanged",
          first["namespace"], before=first["before"], after=first["after"], ts=ts)
    return f"{first['namespace']}: {first['action']} {first['name']}"


def _as_first_attempt(ctx: JobContext, request: Request) -> tuple[dict[str, Any],
                                                                   Prepared | None]:
    """The change as the request's first attempt prepared it (what its thread and audit say),
    and what is left to write: None when a retry finds the first attempt's write made (it
    reads as "nothing to remove", or "already says exactly this", which it is not: it is this
    request's own change)."""
    try:
        prepared: Prepared | None = _with_steps(prepare(ctx, request))
        refusal = None
    except Refused as exc:
        prepared, refusal = None, exc
    now = None if prepared is None else _summary(prepared)
    first = first_found(ctx, "authz", now)
    # A retry whose first attempt's change is there now (and nothing is left to do); else the
    # first attempt itself, one that wrote nothing yet, or a change someone else made since:
    # as it is now.
    if first is not None and first != now and first["action"] != "none" \
            and (prepared is None or prepared.action == "none"):
        return first, None
    if refusal is not None:
        raise refusal
    assert prepared is not None and now is not None
    return now, prepared


def _summary(prepared: Prepared) -> dict[str, Any]:
    """What the thread and the audit say of ``prepared`` (JSON)."""
    change = prepared.plan.changes[0] if prepared.plan.changes else None
    return {
        "namespace": prepared.namespace, "name": prepared.name, "action": prepared.action,
        "plan": plan_block(prepared.plan),
        "before": text.summary(change.before) if change and change.before else None,
        "after": (f"{prepared.action} AuthorizationPolicy {prepared.name}: "
                  + (text.summary(change.after) if change and change.after else "removed")),
    }


def _write(ctx: JobContext, prepared: Prepared) -> None:
    adapter = _adapter(ctx)
    if prepared.action == "create" and prepared.body is not None:
        adapter.create(prepared.namespace, prepared.body)
    elif prepared.action == "update" and prepared.patch is not None:
        adapter.patch(prepared.namespace, prepared.name, prepared.patch)
    elif prepared.action == "delete":
        before = prepared.plan.changes[0].before or {}
        adapter.delete(prepared.namespace, prepared.name,
                       resource_version(before, f"AuthorizationPolicy {prepared.name}"))


def _list(ctx: JobContext, request: Request) -> str:
    namespace = request.command.target or ""
    require_namespace(ctx, namespace)
    policies = _adapter(ctx).list(namespace)
    rows = [(domain.name_of(p), domain.is_managed(p), text.summary(p)) for p in policies]
    ctx.notifier.post_root(request.channel, text.listing(namespace, rows))
    return f"{namespace}: {len(policies)} AuthorizationPolicies"
