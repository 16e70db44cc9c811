"""The in-place steps of `/mesh migrate`: the readiness gate (phase 1), injection of the pilot
and core services (phases 2 and 3) with its undo, and the namespace's finalization (phase 5).

Each step reads first and writes only what is still missing, conditional on the
resourceVersion it read, so a step run again by another worker changes nothing twice.
"""

from __future__ import annotations

import contextlib
from typing import Any

from jobs.adapters.kube import Obj
from jobs.domain import migration as model
from jobs.domain import migration_bodies as bodies
from jobs.domain.server_fields import resource_version
from jobs.runtime.handlers.readiness import CHECKS, Row
from jobs.runtime.handlers.sidecars import plan_tls
from jobs.runtime.migration_run import Again, Done, Outcome, Run, Stop, Wait, need_approval
from meshbot.errors import MeshbotError, MeshConflict, MeshNotFound, MetricsUnavailable
from rendering import migrate as words
from rendering.common import duration


def deployments_of(run: Run, service: str) -> list[Obj]:
    """The service's own Deployments (found by their ``app`` label), green copies aside."""
    found = run.ctx.kube.find_deployments(run.namespace, {"app": service})
    return sorted((d for d in found
                   if bodies.MIGRATION_LABEL not in ((d.get("metadata") or {}).get("labels")
                                                     or {})), key=bodies.name_of)


def gate_rows(run: Run) -> list[Row]:
    rows: list[Row] = []
    for name, check in CHECKS:
        try:
            rows.append(check(run.ctx))
        except MeshbotError as exc:  # one unreadable check fails its row, not the table
            rows.append((name, False, f"cannot read: {exc.message}"))
    return rows


def gate(run: Run, step: model.Step) -> Outcome:
    rows = gate_rows(run)
    failing = [name for name, ok, _ in rows if not ok]
    if not failing:
        run.say(words.gate(rows, forced=False))
        return Done()
    if not run.workflow.force:
        run.say(words.gate(rows, forced=False))
        return Stop(f"readiness gate: {len(failing)} failing ({', '.join(failing)})")
    policy = run.ctx.policy
    count = max([policy.namespace_approvals.emergency,
                 *(t.approvals.emergency for t in policy.namespace_tiers(run.namespace))])
    outcome = need_approval(run, step, count, f"forcing the migration of `{run.namespace}` "
                            f"past {len(failing)} failing readiness checks")
    if isinstance(outcome, Done):
        run.say(words.gate(rows, forced=True))
        run.audit(run.namespace, "forced", f"readiness gate forced past: {', '.join(failing)}")
    return outcome


# --- phases 2 and 3: injection in place -----------------------------------------------------------

def inject(run: Run, step: model.Step, service: str | None = None,
           names: list[str] | None = None) -> Outcome:
    """Note every pod template first (the undo puts them back), then inject."""
    service = service or step.service or ""
    memo = run.memo(step)
    found = deployments_of(run, service)
    if names is not None:
        found = [d for d in found if bodies.name_of(d) in names]
    if "templates" not in memo:
        run.remember(step, templates={bodies.name_of(d): bodies.template(d) for d in found
                                      if not bodies.injected(d)},
                     already=[bodies.name_of(d) for d in found if bodies.injected(d)])
        return Again()
    for deployment in found:
        name = bodies.name_of(deployment)
        if name not in memo["templates"] or bodies.injected(deployment):
            continue
        run.work.patch_deployment(run.namespace, name, bodies.inject_patch(),
                                  resource_version(deployment, f"Deployment {name}"))
        run.audit(service, "done", f"{bodies.INJECT}=true on Deployment {run.namespace}/{name}",
                  before="no sidecar", after="sidecar injected")
    run.remember(step, started_at=run.now)
    run.say(words.injected(service, sorted(memo["templates"]), memo.get("already") or []))
    return Done()


def rollout(run: Run, step: model.Step, names: list[str] | None = None) -> Outcome:
    """Wait until every Deployment's rollout is complete, as `kubectl rollout status` judges."""
    service = step.service or ""
    memo = run.memo(step)
    if "since" not in memo:
        run.remember(step, since=run.now)
        return Again()
    pending = []
    for deployment in deployments_of(run, service):
        if names is not None and bodies.name_of(deployment) not in names:
            continue
        complete, why = model.rollout_complete(deployment)
        if not complete:
            pending.append(f"`{bodies.name_of(deployment)}`: {why}")
    if not pending:
        return Done()
    timeout = run.ctx.policy.migrate.rollout_timeout
    if run.now - float(memo["since"]) > timeout:
        return undo(run, step, f"rollout not complete after {duration(timeout)} "
                    f"({'; '.join(pending)})")
    return Wait("rollout: " + "; ".join(pending))


def pods(run: Run, step: model.Step) -> Outcome:
    """The service answers: as many Ready pods with the sidecar as its Deployments want."""
    service = step.service or ""
    memo = run.memo(step)
    if "since" not in memo:
        run.remember(step, since=run.now)
        return Again()
    wanted = sum(int((d.get("spec") or {}).get("replicas", 1)) for d in deployments_of(run,
                                                                                      service))
    ready, total = model.ready_with_sidecar(run.ctx.kube.list_pods(run.namespace,
                                                                  {"app": service}))
    if ready >= wanted:
        run.say(words.service_migrated(service, step.phase,
                                       f"{ready} ready pods with the sidecar"))
        return Done()
    if run.now - float(memo["since"]) > run.ctx.policy.migrate.rollout_timeout:
        return undo(run, step, f"only {ready} of {wanted} pods ready with the sidecar")
    return Wait(f"`{service}`: {ready} of {wanted} pods ready with the sidecar ({total} pods)")


def watch(run: Run, step: model.Step, *, may_finish: bool = True) -> Outcome:
    """Phase 3: the service's error rate for ``migrate.watch``; above the threshold, undo."""
    service = step.service or ""
    settings = run.ctx.policy.migrate
    found = run.watch_window(step, settings.watch)
    if found is None:
        return Again()
    elapsed, min_window, window = found
    # Judged only once the window holds enough scrapes to be evidence.
    evidence = elapsed >= min_window
    try:
        percent, rps = run.error_percent(service, window)
    except MetricsUnavailable as exc:
        return Wait(f"`{service}`: {exc.message}")
    text = words.numbers(percent, rps, settings.error_threshold)
    run.measured(f"`{service}` {text}")
    if evidence and model.breached(percent, settings.error_threshold):
        return undo(run, step, text)
    if elapsed >= settings.watch and may_finish:
        if percent is None:  # no evidence is no pass: the service's no_data policy decides
            if run.view(service).analysis.no_data == "rollback":
                return undo(run, step, words.no_traffic_seen(settings.watch))
            return Wait(words.no_traffic_holding(service, settings.watch))
        run.say(words.service_migrated(service, 3, text))
        return Done()
    return Wait(words.watch_left(f"`{service}`", settings.watch - elapsed))


def undo(run: Run, step: model.Step, why: str) -> Outcome:
    """Put back every pod template the service's inject step replaced, then stop."""
    service = step.service or ""
    restored = restore_templates(run, service, step.phase)
    run.say(words.undone(service, restored, why))
    return Stop(f"`{service}` undone: {why}")


def restore_templates(run: Run, service: str, phase: int, kind: str = "inject") -> list[str]:
    saved: dict[str, Any] = {}
    for index in run.workflow.service_steps(service, phase):
        candidate = run.workflow.steps[index]
        if candidate.kind == kind:
            saved = run.memo(candidate).get("templates") or {}
    restored = []
    for deployment in deployments_of(run, service):
        name = bodies.name_of(deployment)
        if name not in saved or bodies.template(deployment) == saved[name]:
            continue
        run.work.patch_deployment(run.namespace, name, bodies.undo_patch(deployment, saved[name]),
                                  resource_version(deployment, f"Deployment {name}"))
        run.audit(service, "undone", f"pod template of Deployment {run.namespace}/{name} "
                  "restored", before="sidecar injected", after="previous pod template")
        restored.append(name)
    return restored


# --- phase 5: the namespace ------------------------------------------------------------------

def approve_finalize(run: Run, step: model.Step) -> Outcome:
    approvals = run.ctx.policy.namespace_approvals
    return need_approval(run, step, max(approvals.mtls, approvals.inject_namespace),
                         f"finalizing `{run.namespace}` (injection label, STRICT mTLS, "
                         "ISTIO_MUTUAL, Telemetry)")


def label(run: Run, step: model.Step) -> Outcome:
    namespace = run.ctx.kube.get_namespace(run.namespace)
    labels = dict((namespace.get("metadata") or {}).get("labels") or {})
    wanted = bodies.injection_labels(labels)
    if wanted is None:
        kept = labels.get(bodies.REVISION_LABEL)
        run.say(words.finalized(run.namespace, [
            f"kept `{bodies.REVISION_LABEL}={kept}`" if kept
            else f"`{bodies.INJECTION_LABEL}=enabled` already"]))
        return Done()
    run.ctx.kube.patch_namespace_labels(run.namespace, wanted,
                                        resource_version(namespace, f"namespace {run.namespace}"))
    run.audit(run.namespace, "done", f"{bodies.INJECTION_LABEL}=enabled",
              before=labels.get(bodies.INJECTION_LABEL) or "unset", after="enabled")
    run.say(words.finalized(run.namespace, [f"`{bodies.INJECTION_LABEL}=enabled`"]))
    return Done()


def tls(run: Run, step: model.Step) -> Outcome:
    """Clients first: ISTIO_MUTUAL on the DestinationRules (origination to outside hosts left
    alone), and the runbook's namespace-wide one."""
    group, version = run.ctx.settings.networking_group_version
    rules = run.ctx.kube.list_destination_rules(run.namespace)
    to_set, _, _ = plan_tls(rules)
    for rule in to_set:
        name = bodies.name_of(rule)
        run.ctx.kube.patch_destination_rule_tls_mode(
            run.namespace, name, bodies.MUTUAL, resource_version(rule, f"DestinationRule {name}"))
        run.audit(run.namespace, "done", f"DestinationRule {name}: {bodies.MUTUAL}")
    if not any(bodies.name_of(r) == bodies.MUTUAL_RULE for r in rules):
        with contextlib.suppress(MeshConflict):  # created by this step's first run
            run.ctx.kube.create_custom(group, version, "destinationrules", run.namespace,
                                       bodies.mutual_rule(run.namespace, f"{group}/{version}"))
        run.audit(run.namespace, "done", f"DestinationRule {bodies.MUTUAL_RULE} "
                  f"({bodies.MUTUAL_HOST}) created: {bodies.MUTUAL}")
    run.say(words.finalized(run.namespace, [f"{bodies.MUTUAL} on {len(to_set)} "
                                            "DestinationRules and the namespace-wide one"]))
    return Done()


def strict(run: Run, step: model.Step) -> Outcome:
    kube = run.ctx.kube
    try:
        peer: Obj | None = kube.get_peer_authentication(run.namespace, "default")
    except MeshNotFound:
        peer = None
    mode = str(((peer or {}).get("spec") or {}).get("mtls", {}).get("mode") or "") or None
    if peer is None:
        kube.create_peer_authentication(run.namespace, "default", "STRICT")
    elif mode != "STRICT":
        kube.set_peer_authentication_mode(run.namespace, "default", "STRICT",
                                          resource_version(peer, "PeerAuthentication default"))
    if mode != "STRICT":
        run.audit(run.namespace, "done", "PeerAuthentication default: STRICT",
                  before=mode or "none", after="STRICT")
    run.say(words.finalized(run.namespace, ["PeerAuthentication `default` STRICT"]))
    return Done()


def telemetry(run: Run, step: model.Step) -> Outcome:
    providers = run.ctx.policy.telemetry.providers
    body = bodies.telemetry(run.namespace, providers.metrics, providers.tracing,
                            providers.access_logging)
    name = bodies.telemetry_name(run.namespace)
    try:
        current: Obj | None = run.work.get_custom("telemetry.istio.io", "v1", "telemetries",
                                                  run.namespace, name)
    except MeshNotFound:
        current = None
    if current is None:
        run.ctx.kube.create_custom("telemetry.istio.io", "v1", "telemetries", run.namespace,
                                   body)
    elif current.get("spec") != body["spec"]:
        run.ctx.kube.patch_custom("telemetry.istio.io", "v1", "telemetries", run.namespace, name,
                                  {"metadata": {"resourceVersion": resource_version(
                                      current, f"Telemetry {name}")}, "spec": body["spec"]})
    else:
        return Done()
    run.audit(run.namespace, "done", f"Telemetry {name}: {body['spec']}")
    run.say(words.finalized(run.namespace, [f"Telemetry `{name}`"]))
    return Done()
