"""Sidecar migration and mTLS: inject (one service), inject-namespace, mtls.

The runbook migrates in tiers, pilot → core → critical, one service at a time, and only then
labels the namespace; these commands warn (in the thread) when that order is skipped. meshbot's
own namespace is never injected nor made STRICT. Every write is a merge patch of only the field
meshbot owns, conditional on the resourceVersion read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobs.domain.gitops import ensure_not_gitops_owned
from jobs.domain.server_fields import resource_version
from jobs.runtime.context import JobContext
from jobs.runtime.handlers.common import (
    first_found,
    plans,
    record,
    request_thread,
    service_view,
    show_plan,
)
from meshbot.commands import Request
from meshbot.errors import MeshForbidden, MeshNotFound, Refused
from meshbot.plan import ObjectChange, Plan
from policies.views import ServiceView
from rendering import plan as plan_text
from rendering import sidecars as sidecar_text

Obj = dict[str, Any]
INJECT = "sidecar.istio.io/inject"
INJECTION_LABEL = "istio-injection"
REVISION_LABEL = "istio.io/rev"
TIER_ORDER = ("pilot", "core", "critical")
PEER_AUTHENTICATION = "default"
MUTUAL = "ISTIO_MUTUAL"
# TLS origination to hosts outside the mesh: switching those to ISTIO_MUTUAL would break them.
ORIGINATION = frozenset({"SIMPLE", "MUTUAL"})


# --- what is injected (pure) --------------------------------------------------------------------

def namespace_injects(labels: Mapping[str, str]) -> bool:
    return labels.get(INJECTION_LABEL) == "enabled" or REVISION_LABEL in labels


def deployment_injected(deployment: Mapping[str, Any], namespace_labels: Mapping[str, str]) -> bool:
    """Whether the Deployment's pods get a sidecar: the pod template's own say first (annotation,
    or the newer label), else the namespace's."""
    meta = (deployment.get("spec") or {}).get("template", {}).get("metadata") or {}
    say = (meta.get("annotations") or {}).get(INJECT) or (meta.get("labels") or {}).get(INJECT)
    if say is not None:
        return str(say).lower() == "true"
    return namespace_injects(namespace_labels)


def _labels(namespace: Obj) -> dict[str, str]:
    return dict((namespace.get("metadata") or {}).get("labels") or {})


def _tier_rank(tier: str) -> int | None:
    return TIER_ORDER.index(tier) if tier in TIER_ORDER else None


def not_injected(ctx: JobContext, views: list[ServiceView]) -> dict[str, list[str]]:
    """Tier → the services of ``views`` whose Deployments do not all get a sidecar yet.

    A service in meshbot's own namespace is not part of the tier order: that namespace is never
    injected, and meshbot's role does not even let it read it (the chart never manages it)."""
    missing: dict[str, list[str]] = {}
    namespaces: dict[str, dict[str, str]] = {}
    for view in sorted(views, key=lambda v: v.name):
        if view.namespace == ctx.settings.namespace:
            continue
        if view.namespace not in namespaces:
            namespaces[view.namespace] = _labels(_namespace(ctx, view.namespace))
        found = ctx.kube.find_deployments(view.namespace, {"app": view.name})
        if found and not all(deployment_injected(d, namespaces[view.namespace]) for d in found):
            missing.setdefault(view.tier, []).append(view.name)
    return missing


def _earlier_tiers(ctx: JobContext, tier: str) -> list[ServiceView]:
    rank = _tier_rank(tier)
    views = [ctx.policy.service(name) for name in ctx.policy.service_names]
    return [v for v in views if v is not None and rank is not None
            and (r := _tier_rank(v.tier)) is not None and r < rank]


def _namespace(ctx: JobContext, name: str) -> Obj:
    try:
        return ctx.kube.get_namespace(name)
    except MeshNotFound:
        raise Refused(sidecar_text.no_namespace(name)) from None
    except MeshForbidden as exc:
        raise Refused(sidecar_text.namespace_not_managed(name, exc.message)) from None


def _not_own(ctx: JobContext, namespace: str, what: str) -> None:
    if namespace == ctx.settings.namespace:
        raise Refused(sidecar_text.own_namespace(namespace, what))


# --- /mesh inject <service> ---------------------------------------------------------------------

def _injected(deployment: Obj) -> ObjectChange:
    """The Deployment and what ``annotate_pod_template`` with ``{INJECT: "true"}`` leaves."""
    patch = {"spec": {"template": {"metadata": {"annotations": {INJECT: "true"}}}}}
    return ObjectChange.patched("Deployment", deployment["metadata"].get("namespace", ""),
                                _name(deployment), deployment, patch)


@plans
def inject(ctx: JobContext, request: Request) -> str:
    view = service_view(ctx, request)
    _not_own(ctx, view.namespace, "injected")
    deployments = ctx.kube.find_deployments(view.namespace, {"app": view.name})
    if not deployments:
        raise Refused(sidecar_text.no_deployments(view.name, view.namespace))
    for deployment in deployments:
        ensure_not_gitops_owned(deployment, allowed=view.gitops_allowed)
    skipped = not_injected(ctx, _earlier_tiers(ctx, view.tier))
    if request.command.dry_run:
        todo = [d for d in deployments if _template_annotations(d).get(INJECT) != "true"]
        warned = [sidecar_text.tier_order_skipped(view.name, view.tier, skipped)] if skipped \
            else []
        rolls = [plan_text.pods_roll(_name(d), _rollout_facts(d)["replicas"]) for d in todo]
        return show_plan(ctx, request, Plan(tuple(_injected(d) for d in todo),
                                            tuple(warned + rolls)))
    ts = request_thread(ctx, request, request.channel, sidecar_text.inject_root(
        view.name, view.namespace, request.user, [_name(d) for d in deployments]))
    if skipped:
        ctx.notifier.reply(request.channel, ts, sidecar_text.tier_order_skipped(
            view.name, view.tier, skipped))
    lines, changed = [], []
    # What this request changes: as its first attempt found it (a retry after the writes
    # landed finds them made, and they are still this request's).
    ours = set(first_found(ctx, "inject", [_name(d) for d in deployments
                                           if _template_annotations(d).get(INJECT) != "true"]))
    for deployment in deployments:
        annotations = _template_annotations(deployment)
        if annotations.get(INJECT) == "true":
            if _name(deployment) in ours:  # written by this request's earlier attempt
                changed.append(_name(deployment))
                lines.append(sidecar_text.deployment_rolling(_name(deployment),
                                                             _rollout_facts(deployment)))
            else:
                lines.append(sidecar_text.deployment_unchanged(_name(deployment)))
            continue
        written = ctx.kube.annotate_pod_template(
            view.namespace, _name(deployment), {INJECT: "true"},
            resource_version(deployment, f"Deployment {view.namespace}/{_name(deployment)}"))
        changed.append(_name(deployment))
        lines.append(sidecar_text.deployment_rolling(_name(deployment), _rollout_facts(written)))
    ctx.notifier.reply(request.channel, ts,
                       sidecar_text.inject_done(view.name, lines, bool(changed)))
    record(ctx, request, "done", channel=request.channel, ts=ts,
           detail=f"{INJECT}=true on {', '.join(changed) or 'nothing (already set)'}")
    return f"{view.name}: injected {len(changed)}"


def _name(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["name"])


def _template_annotations(deployment: Mapping[str, Any]) -> dict[str, str]:
    meta = (deployment.get("spec") or {}).get("template", {}).get("metadata") or {}
    return dict(meta.get("annotations") or {})


def _rollout_facts(deployment: Mapping[str, Any]) -> dict[str, int]:
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    return {
        "generation": int(deployment["metadata"].get("generation") or 0),
        "replicas": int(spec.get("replicas") or 0),
        "updated": int(status.get("updatedReplicas") or 0),
        "ready": int(status.get("readyReplicas") or 0),
    }


# --- /mesh inject-namespace <ns> ----------------------------------------------------------------

@plans
def inject_namespace(ctx: JobContext, request: Request) -> str:
    name = request.command.target or ""
    _not_own(ctx, name, "injected")
    namespace = _namespace(ctx, name)
    ensure_not_gitops_owned(namespace, allowed=ctx.policy.gitops_allowed)
    labels = _labels(namespace)
    views = [v for v in (ctx.policy.service(s) for s in ctx.policy.service_names)
             if v is not None and v.namespace == name]
    pending = not_injected(ctx, views)
    labelled = REVISION_LABEL in labels or labels.get(INJECTION_LABEL) == "enabled"
    if request.command.dry_run:
        label = {"metadata": {"labels": {INJECTION_LABEL: "enabled"}}}
        change = () if labelled else (ObjectChange.patched("Namespace", "", name, namespace,
                                                           label),)
        warned = (sidecar_text.namespace_before_tiers(name, pending),) if pending else ()
        return show_plan(ctx, request, Plan(change, (*warned, plan_text.namespace_pods(name))))
    ts = request_thread(ctx, request, request.channel,
                        sidecar_text.inject_namespace_root(name, request.user))
    if pending:
        ctx.notifier.reply(request.channel, ts, sidecar_text.namespace_before_tiers(name, pending))
    # The labels as the request's first attempt found them: a retry after its label landed
    # finds it set, and it is still this request's change.
    found: dict[str, str] = first_found(ctx, "inject-namespace", labels)
    if REVISION_LABEL in found:
        # A revision label selects a specific istiod; istio-injection would override it.
        text = sidecar_text.namespace_revision(name, found[REVISION_LABEL])
        outcome = f"kept {REVISION_LABEL}={found[REVISION_LABEL]}"
    elif found.get(INJECTION_LABEL) == "enabled":
        text = sidecar_text.namespace_already_injected(name)
        outcome = f"{INJECTION_LABEL}=enabled already"
    else:
        if labels.get(INJECTION_LABEL) != "enabled":  # not yet written by an earlier attempt
            ctx.kube.patch_namespace_labels(name, {INJECTION_LABEL: "enabled"},
                                            resource_version(namespace, f"namespace {name}"))
        text = sidecar_text.namespace_injected(name, found.get(INJECTION_LABEL))
        outcome = f"{INJECTION_LABEL} {found.get(INJECTION_LABEL) or 'unset'} → enabled"
    ctx.notifier.reply(request.channel, ts, text)
    record(ctx, request, "done", channel=request.channel, ts=ts, detail=outcome)
    return f"{name}: {outcome}"


# --- /mesh mtls <ns> strict|permissive ----------------------------------------------------------

def plan_tls(rules: list[Obj]) -> tuple[list[Obj], list[str], list[tuple[str, str]]]:
    """(rules to set to ISTIO_MUTUAL, names already so, (name, mode) left alone). Pure."""
    to_set, already, left = [], [], []
    for rule in rules:
        tls = ((rule.get("spec") or {}).get("trafficPolicy") or {}).get("tls") or {}
        mode = str(tls.get("mode") or "")
        if mode == MUTUAL:
            already.append(_name(rule))
        elif mode in ORIGINATION:
            left.append((_name(rule), mode))
        else:
            to_set.append(rule)
    return to_set, already, left


def _mtls_changes(ctx: JobContext, namespace: str, mode: str, peer: Obj | None,
                  to_set: list[Obj]) -> tuple[ObjectChange, ...]:
    """What the writes below leave: each DestinationRule's tls mode, then the
    PeerAuthentication created (``create_peer_authentication``'s body) or its mode set."""
    found = [ObjectChange.patched("DestinationRule", namespace, _name(rule), rule,
                                  {"spec": {"trafficPolicy": {"tls": {"mode": MUTUAL}}}})
             for rule in to_set]
    if peer is None:
        group, version = ctx.settings.security_group_version
        found.append(ObjectChange("PeerAuthentication", namespace, PEER_AUTHENTICATION, None, {
            "apiVersion": f"{group}/{version}", "kind": "PeerAuthentication",
            "metadata": {"name": PEER_AUTHENTICATION, "namespace": namespace},
            "spec": {"mtls": {"mode": mode}}}))
    else:
        found.append(ObjectChange.patched("PeerAuthentication", namespace, PEER_AUTHENTICATION,
                                          peer, {"spec": {"mtls": {"mode": mode}}}))
    return tuple(found)


@plans
def mtls(ctx: JobContext, request: Request) -> str:
    name = request.command.target or ""
    mode = (request.command.switch or "").upper()
    if mode == "STRICT":
        _not_own(ctx, name, "switched to STRICT mTLS")
    namespace = _namespace(ctx, name)
    allowed = ctx.policy.gitops_allowed
    try:
        peer: Obj | None = ctx.kube.get_peer_authentication(name, PEER_AUTHENTICATION)
    except MeshNotFound:
        peer = None
    if peer is not None:
        ensure_not_gitops_owned(peer, allowed=allowed)
    to_set: list[Obj] = []
    already: list[str] = []
    left: list[tuple[str, str]] = []
    if mode == "STRICT":
        to_set, already, left = plan_tls(ctx.kube.list_destination_rules(name))
        for rule in to_set:
            ensure_not_gitops_owned(rule, allowed=allowed)
    before = str(((peer or {}).get("spec") or {}).get("mtls", {}).get("mode") or "") or None
    if request.command.dry_run:
        warned = (sidecar_text.strict_without_injection(name),) if mode == "STRICT" \
            and not namespace_injects(_labels(namespace)) else ()
        kept = tuple(plan_text.tls_kept(rule, tls) for rule, tls in left)
        return show_plan(ctx, request, Plan(_mtls_changes(ctx, name, mode, peer, to_set),
                                            warned + kept))
    # As the request's first attempt found them: a retry after its writes landed finds the
    # rules already ISTIO_MUTUAL and the PeerAuthentication already at ``mode``, and those
    # are still this request's changes, not what was there before.
    first = first_found(ctx, "mtls", {"before": before, "created": peer is None,
                                      "set": [_name(r) for r in to_set]})
    ours = list(dict.fromkeys([*first["set"], *(_name(r) for r in to_set)]))
    already = [n for n in already if n not in ours]
    root = sidecar_text.mtls_root(name, mode, request.user)
    ts = request_thread(ctx, request, request.channel, root)
    if mode == "STRICT" and not namespace_injects(_labels(namespace)):
        ctx.notifier.reply(request.channel, ts, sidecar_text.strict_without_injection(name))
    # Clients first: with ISTIO_MUTUAL on the DestinationRules they already speak mTLS, which a
    # PERMISSIVE server accepts, so turning the server STRICT afterwards breaks no call.
    for rule in to_set:
        ctx.kube.patch_destination_rule_tls_mode(
            name, _name(rule), MUTUAL,
            resource_version(rule, f"DestinationRule {name}/{_name(rule)}"))
    if mode == "STRICT":
        ctx.notifier.reply(request.channel, ts, sidecar_text.mtls_destination_rules(
            ours, already, left))
    if peer is None:
        ctx.kube.create_peer_authentication(name, PEER_AUTHENTICATION, mode)
    elif before != mode:
        ctx.kube.set_peer_authentication_mode(
            name, PEER_AUTHENTICATION, mode,
            resource_version(peer, f"PeerAuthentication {name}/{PEER_AUTHENTICATION}"))
    before = first["before"]
    ctx.notifier.reply(request.channel, ts, sidecar_text.mtls_peer_authentication(
        name, PEER_AUTHENTICATION, before, mode, created=first["created"]))
    detail = (f"PeerAuthentication {name}/{PEER_AUTHENTICATION} {before or 'none'} → {mode}; "
              f"{MUTUAL} set on {', '.join(ours) or 'no DestinationRule'}")
    record(ctx, request, "done", channel=request.channel, ts=ts, detail=detail)
    return f"{name}: mTLS {mode}"
