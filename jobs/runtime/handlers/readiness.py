"""``/mesh readiness``: the runbook's production-readiness checks as a pass/fail table.

The control plane as the runbook installs it (istiod: three replicas in three zones, a
PodDisruptionBudget, an HPA; an ingress gateway of at least two replicas), mTLS mode per managed
namespace, and meshbot's own health (Redis, its persistence, the analysis tick). Each check is a
small function returning one row; a check that cannot read what it needs fails with why, rather
than hiding the rest of the table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from jobs.adapters.kube import Obj
from jobs.runtime.context import JobContext
from jobs.runtime.handlers.emergency import selects
from meshbot.commands import Request
from meshbot.errors import MeshbotError
from meshbot.network_words import redis_in_words
from rendering import common as words
from rendering import runbook as runbook_text

log = logging.getLogger(__name__)

Row = tuple[str, bool, str]
ISTIOD = {"app": "istiod"}
MIN_ISTIOD, MIN_ZONES, MIN_GATEWAY = 3, 3, 2
ZONE_LABEL = "topology.kubernetes.io/zone"
TICK_STALE_S = 60.0


def _istiod(ctx: JobContext) -> Obj | None:
    deployments = ctx.kube.list_deployments(ctx.settings.istio_namespace)
    found = [d for d in deployments if d["metadata"]["name"] == "istiod"]
    return found[0] if found else None


def istiod_replicas(ctx: JobContext) -> Row:
    name = f"istiod replicas >= {MIN_ISTIOD}"
    deployment = _istiod(ctx)
    if deployment is None:
        return name, False, f"no Deployment istiod in {ctx.settings.istio_namespace}"
    ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    wanted = int((deployment.get("spec") or {}).get("replicas", 1))
    return name, ready >= MIN_ISTIOD, f"{ready} ready of {wanted}"


def istiod_zones(ctx: JobContext) -> Row:
    name = "istiod spread across zones"
    pods = ctx.kube.list_pods(ctx.settings.istio_namespace, ISTIOD)
    zones_of = {n["metadata"]["name"]: (n["metadata"].get("labels") or {}).get(ZONE_LABEL)
                for n in ctx.kube.list_nodes()}
    zones = {zones_of.get((p.get("spec") or {}).get("nodeName") or "") for p in pods} - {None}
    unknown = sum(zones_of.get((p.get("spec") or {}).get("nodeName") or "") is None for p in pods)
    needed = min(MIN_ZONES, max(len(pods), 2))
    detail = f"{len(zones)} zones ({', '.join(sorted(str(z) for z in zones)) or 'none'}) " \
             f"for {len(pods)} pods"
    if unknown:
        detail += f"; {unknown} pods on nodes without a {ZONE_LABEL} label"
    return name, len(zones) >= needed, detail


def istiod_pdb(ctx: JobContext) -> Row:
    name = "istiod PodDisruptionBudget"
    for pdb in ctx.kube.list_pod_disruption_budgets(ctx.settings.istio_namespace):
        spec = pdb.get("spec") or {}
        if selects(spec.get("selector") or {}, ISTIOD):
            bound = (f"minAvailable {spec['minAvailable']}" if "minAvailable" in spec
                     else f"maxUnavailable {spec.get('maxUnavailable')}")
            return name, True, f"`{pdb['metadata']['name']}`: {bound}"
    return name, False, f"none selects the istiod pods in {ctx.settings.istio_namespace}"


def istiod_hpa(ctx: JobContext) -> Row:
    name = "istiod HorizontalPodAutoscaler"
    for hpa in ctx.kube.list_horizontal_pod_autoscalers(ctx.settings.istio_namespace):
        spec = hpa.get("spec") or {}
        if (spec.get("scaleTargetRef") or {}).get("name") == "istiod":
            low, high = spec.get("minReplicas", 1), spec.get("maxReplicas")
            return name, int(low) >= MIN_ISTIOD, f"`{hpa['metadata']['name']}`: {low} to {high}"
    return name, False, f"none scales istiod in {ctx.settings.istio_namespace}"


def ingress_gateway(ctx: JobContext) -> Row:
    name = f"ingress gateway replicas >= {MIN_GATEWAY}"
    for deployment in ctx.kube.list_deployments(ctx.settings.istio_namespace):
        labels = deployment["metadata"].get("labels") or {}
        if labels.get("istio") == "ingressgateway" or \
                deployment["metadata"]["name"] == "istio-ingressgateway":
            ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
            return name, ready >= MIN_GATEWAY, f"`{deployment['metadata']['name']}`: {ready} ready"
    return name, False, f"no ingress gateway Deployment in {ctx.settings.istio_namespace}"


def mtls_rows(ctx: JobContext) -> list[Row]:
    """The policy has no per-namespace mTLS requirement, so each managed namespace's mode is
    reported against the runbook's production practice: STRICT."""
    group, version = ctx.settings.security_group_version
    namespaces = sorted({ctx.policy.defaults.namespace,
                         *(v.namespace for n in ctx.policy.service_names
                           if (v := ctx.policy.service(n)) is not None)})
    rows: list[Row] = []
    for namespace in namespaces:
        name = f"mTLS STRICT in {namespace}"
        try:
            found = ctx.kube.list_custom(group, version, "peerauthentications", namespace)
        except MeshbotError as exc:
            rows.append((name, False, f"cannot read: {exc.message}"))
            continue
        wide = [p for p in found if not (p.get("spec") or {}).get("selector")]
        mode = ((wide[0].get("spec") or {}).get("mtls") or {}).get("mode", "UNSET") if wide \
            else None
        detail = (f"namespace-wide PeerAuthentication `{wide[0]['metadata']['name']}`: {mode}"
                  if wide else "no namespace-wide PeerAuthentication (the mesh default applies)")
        rows.append((name, mode == "STRICT", detail))
    return rows


def meshbot_health(ctx: JobContext, now: float) -> list[Row]:
    try:
        ctx.redis.ping()
        aof = bool(int(ctx.redis.info("persistence").get("aof_enabled", 0)))
        raw = ctx.redis.get(ctx.store.keys.last_tick)
    except redis.RedisError as exc:
        # In words for the thread; the library's text (host, port, errno) for the log.
        log.warning("readiness: meshbot's Redis failed: %s: %s", type(exc).__name__, exc)
        return [("meshbot Redis reachable", False, f"Redis {redis_in_words(exc)}")]
    rows = [("meshbot Redis reachable", True, "ping answered"),
            ("meshbot Redis persistence (AOF)", aof,
             "on" if aof else "off: approvals, audit and backups would not survive a restart")]
    if raw is None:
        rows.append(("meshbot analysis tick recent", False, "no tick recorded yet"))
    else:
        age = now - float(raw)
        rows.append(("meshbot analysis tick recent", age <= TICK_STALE_S,
                     f"last tick {words.duration(max(round(age), 0))} ago"))
    return rows


CHECKS: tuple[tuple[str, Callable[[JobContext], Row]], ...] = (
    (f"istiod replicas >= {MIN_ISTIOD}", istiod_replicas),
    ("istiod spread across zones", istiod_zones),
    ("istiod PodDisruptionBudget", istiod_pdb),
    ("istiod HorizontalPodAutoscaler", istiod_hpa),
    (f"ingress gateway replicas >= {MIN_GATEWAY}", ingress_gateway),
)


def readiness(ctx: JobContext, request: Request) -> str:
    rows: list[Row] = []
    for name, check in CHECKS:
        try:
            rows.append(check(ctx))
        except MeshbotError as exc:  # one unreadable check must not hide the others
            rows.append((name, False, f"cannot read: {exc.message}"))
    rows += mtls_rows(ctx)
    rows += meshbot_health(ctx, time.time())
    ctx.notifier.post_root(request.channel, runbook_text.readiness_table(rows))
    return f"{sum(ok for _, ok, _ in rows)}/{len(rows)} pass"
