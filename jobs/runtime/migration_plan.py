"""What `/mesh migrate` would write, object by object, from the bodies its steps write
(``jobs.domain.migration_bodies``); and what each of its approvals is for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from jobs.adapters.kube import Obj
from jobs.domain import migration_bodies as bodies
from jobs.domain.migration import TIER_OF_PHASE
from jobs.runtime.handlers.sidecars import plan_tls
from jobs.runtime.migration_bluegreen import facts, read_facts
from jobs.runtime.migration_phases import deployments_of
from jobs.runtime.migration_run import Run
from meshbot.errors import MeshNotFound
from meshbot.plan import ObjectChange, Plan
from rendering.common import duration


def _change(kind: str, namespace: str, name: str, before: Obj | None,
            after: Obj | None) -> ObjectChange:
    return ObjectChange(kind, namespace, name, before, after)


def in_place(run: Run, services: Sequence[str]) -> list[ObjectChange]:
    return [_change("Deployment", run.namespace, bodies.name_of(d), d, bodies.with_injection(d))
            for service in services for d in deployments_of(run, service)
            if not bodies.injected(d)]


def blue_green(run: Run, service: str) -> list[ObjectChange]:
    facts = read_facts(run, service)
    ns = run.namespace
    by_name = {bodies.name_of(d): d for d in deployments_of(run, service)}
    changes = [_change("Deployment", ns, bodies.green_name(n), None,
                       bodies.green_copy(by_name[n], facts["version_label"], "<workflow>"))
               for n in facts["blue"]]
    dr = run.ctx.kube.get_destination_rule(ns, facts["dr"])
    green = {facts["version_label"]: bodies.GREEN}
    split = {**dr, "spec": {**dr.get("spec", {}), "subsets": bodies.with_subsets(
        facts["subsets"], {bodies.BLUE: facts["blue_labels"], bodies.GREEN: green})}}
    changes.append(_change("DestinationRule", ns, facts["dr"], dr, split))
    vs = run.ctx.kube.get_virtual_service(ns, facts["vs"])
    changes.append(_change("VirtualService", ns, facts["vs"], vs, {
        **vs, "spec": {**vs.get("spec", {}), "http": bodies.blue_green_http(
            facts["http"], bodies.GREEN_WEIGHT)}}))
    changes += [_change("Deployment", ns, n, by_name[n], None) for n in facts["blue"]]
    changes += [_change("Deployment", ns, n, by_name[n], bodies.with_injection(by_name[n]))
                for n in facts["idle"] if not bodies.injected(by_name[n])]
    return changes


def cutover(run: Run, service: str) -> list[ObjectChange]:
    """The cut-over: the VirtualService's split from blue 90 / green 10 to green 100."""
    info = facts(run, service)
    vs = run.ctx.kube.get_virtual_service(run.namespace, info["vs"])
    after = {**vs, "spec": {**vs.get("spec", {}),
                            "http": bodies.blue_green_http(info["http"], 100)}}
    return [_change("VirtualService", run.namespace, info["vs"], vs, after)]


def finalize(run: Run) -> list[ObjectChange]:
    kube, ns = run.ctx.kube, run.namespace
    group, version = run.ctx.settings.networking_group_version
    namespace = kube.get_namespace(ns)
    labels = dict((namespace.get("metadata") or {}).get("labels") or {})
    changes: list[ObjectChange] = []
    wanted = bodies.injection_labels(labels)
    if wanted:
        after = {**namespace, "metadata": {**namespace["metadata"],
                                           "labels": {**labels, **wanted}}}
        changes.append(_change("Namespace", "", ns, namespace, after))
    rules = kube.list_destination_rules(ns)
    for rule in plan_tls(rules)[0]:
        spec = dict(rule.get("spec") or {})
        policy = dict(spec.get("trafficPolicy") or {})
        policy["tls"] = {**(policy.get("tls") or {}), "mode": bodies.MUTUAL}
        changes.append(_change("DestinationRule", ns, bodies.name_of(rule), rule,
                               {**rule, "spec": {**spec, "trafficPolicy": policy}}))
    if not any(bodies.name_of(r) == bodies.MUTUAL_RULE for r in rules):
        changes.append(_change("DestinationRule", ns, bodies.MUTUAL_RULE, None,
                               bodies.mutual_rule(ns, f"{group}/{version}")))
    sec_group, sec_version = run.ctx.settings.security_group_version
    try:
        peer: Obj | None = kube.get_peer_authentication(ns, "default")
    except MeshNotFound:
        peer = None
    strict = bodies.peer_authentication(ns, f"{sec_group}/{sec_version}")
    changes.append(_change("PeerAuthentication", ns, "default", peer,
                           {**peer, "spec": {**peer.get("spec", {}), **strict["spec"]}}
                           if peer else strict))
    providers = run.ctx.policy.telemetry.providers
    body = bodies.telemetry(ns, providers.metrics, providers.tracing, providers.access_logging)
    try:
        current: Obj | None = run.work.get_custom("telemetry.istio.io", "v1", "telemetries", ns,
                                                  bodies.telemetry_name(ns))
    except MeshNotFound:
        current = None
    changes.append(_change("Telemetry", ns, bodies.telemetry_name(ns), current,
                           {**current, "spec": body["spec"]} if current else body))
    return changes


def build(run: Run, phases: Sequence[int], tiers: Mapping[str, Sequence[str]]
          ) -> list[tuple[str, Plan]]:
    """One plan per phase (per service in phase 4), each short enough for one message."""
    settings = run.ctx.policy.migrate
    parts: list[tuple[str, Plan]] = []
    for phase in phases:
        services = list(tiers.get(TIER_OF_PHASE.get(phase, ""), ()))
        if phase == 1:
            parts.append(("Phase 1", Plan(steps=("check the control plane's readiness "
                                                 "(no write)",))))
        elif phase in (2, 3):
            steps = (f"watch each core service's error rate for {duration(settings.watch)} "
                     f"(above {settings.error_threshold:g} %: restore its previous pod "
                     "template, stop)",) if phase == 3 and services else ()
            parts.append((f"Phase {phase}", Plan(tuple(in_place(run, services)), steps)))
        elif phase == 4:
            for service in services:
                parts.append((f"Phase 4, `{service}`", Plan(tuple(blue_green(run, service)), (
                    "green's 10 % under meshbot's analysis (its SLOs, compared with blue) for "
                    f"{duration(settings.critical_watch)}, then cut over to "
                    "green 100 %, point the live subset at the green pods, put the routes "
                    "back as they were and remove blue",))))
        else:
            parts.append(("Phase 5", Plan(tuple(finalize(run)))))
    return parts


def approvals(run: Run, phases: Sequence[int], tiers: Mapping[str, Sequence[str]],
              force: bool) -> list[str]:
    policy = run.ctx.policy
    found: list[str] = []
    if 1 in phases and force:
        count = max([policy.namespace_approvals.emergency,
                     *(t.approvals.emergency for t in policy.namespace_tiers(run.namespace))])
        found.append(f"forcing past failing readiness checks: {count} (emergency)")
    if 4 in phases:
        for service in tiers.get("critical", ()):
            count = run.view(service).approvals.promote
            if count:
                found.append(f"cut-over of `{service}` to green: {count} (its tier's promote)")
    if 5 in phases:
        count = max(policy.namespace_approvals.mtls, policy.namespace_approvals.inject_namespace)
        if count:
            found.append(f"phase 5 finalize: {count} (namespace mtls / inject-namespace)")
    return found
