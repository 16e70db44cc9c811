"""``/mesh emergency <namespace>``: the runbook's emergency procedure, in a safe order.

1. back the namespace up (so step 4 can be undone with ``/mesh restore``);
2. its PeerAuthentication to PERMISSIVE — before any sidecar goes, or pods that lose theirs
   could no longer be reached by those that still have one;
3. sidecar injection off (``istio-injection=disabled``, or the ``istio.io/rev`` label removed);
4. its VirtualServices and DestinationRules deleted, one by one;
5. its Deployments restarted one at a time (``kubectl.kubernetes.io/restartedAt``): the next one
   only once the previous rollout is complete and its PodDisruptionBudget allows a disruption.

Steps 1 to 4 run in the approved job, each recorded in a run document in Redis so a retried job
repeats none of them and reports each once. Step 5 waits on the cluster, so it is not a sleeping
job: ``continue_job`` is scheduled every few seconds (RQ ``enqueue_in``) until the last rollout
completes or one overruns its deadline, which stops the procedure and says what is left.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from rq import Queue
from rq.serializers import JSONSerializer

from jobs.adapters.kube import RESTARTED_AT, Obj
from jobs.domain.backup_diff import KIND_BY_NAME
from jobs.domain.server_fields import resource_version
from jobs.runtime import context
from jobs.runtime.api import RETRY, URGENT_SUFFIX
from jobs.runtime.context import JobContext
from jobs.runtime.handlers.backup import audit, group_version, require_namespace, take_backup
from jobs.runtime.handlers.common import plans, request_thread, show_plan
from jobs.runtime.reports import report
from meshbot import cluster_scope
from meshbot.commands import Request
from meshbot.errors import Refused
from meshbot.plan import ObjectChange, Plan
from rendering import plan as plan_text
from rendering import runbook as runbook_text

STEPS = 5
POLL_S = 3.0
ROLLOUT_DEADLINE_S = 600.0  # Kubernetes' own default progressDeadlineSeconds
RUN_TTL_S = 7 * 24 * 3600
CONTINUE_TASK = "jobs.runtime.handlers.emergency.continue_job"
INJECTION, REVISION = "istio-injection", "istio.io/rev"


class Run(BaseModel):
    """One emergency in progress, keyed by its request."""

    request_id: str
    user: str
    namespace: str
    channel: str
    thread_ts: str
    done: list[str] = []  # steps already carried out and reported
    pending: list[str] = []  # Deployments still to restart, in order
    total: int = 0
    current: str | None = None
    restarted_at: str = ""
    current_since: float = 0.0
    polls: int = 0
    finished: str = ""  # "", "done" or "stopped"
    cluster: str | None = None  # the policy's cluster it runs in (None: the only one)


def _key(request_id: str) -> str:
    return f"meshbot:emergency:{request_id}"


def _load(ctx: JobContext, request_id: str) -> Run | None:
    raw = ctx.redis.get(_key(request_id))
    return Run.model_validate_json(raw) if raw else None


def _save(ctx: JobContext, run: Run) -> None:
    ctx.redis.set(_key(run.request_id), run.model_dump_json(), ex=RUN_TTL_S)


@plans
def emergency(ctx: JobContext, request: Request) -> str:
    namespace = request.command.target or ""
    if namespace == ctx.settings.namespace:
        raise Refused(runbook_text.emergency_own_namespace(namespace))
    require_namespace(ctx, namespace)
    if request.command.dry_run:
        return show_plan(ctx, request, plan(ctx, namespace))
    run = _load(ctx, request.id)
    if run is None:
        ts = request_thread(ctx, request, request.channel,
                            runbook_text.emergency_root(namespace, request.user,
                                                        request.approved_by))
        run = Run(request_id=request.id, user=request.user, namespace=namespace,
                  channel=request.channel, thread_ts=ts, cluster=ctx.cluster)
        _save(ctx, run)
    steps = (("backup", _backup), ("permissive", _permissive), ("injection", _injection),
             ("routing", _routing), ("plan", _plan))
    for number, (name, step) in enumerate(steps, start=1):
        if name in run.done:
            continue
        text = step(ctx, request, run)
        run.done.append(name)
        _save(ctx, run)  # before the report: never redo a step
        # Said after the step: Slack away must not fail the job, whose retry skips the step
        # (it is done) and so would never say it. Owed, it is said in order when Slack is back.
        report(ctx, run.channel, run.thread_ts, runbook_text.emergency_step(number, STEPS, text))
    audit(ctx, request, "started", namespace, after="PERMISSIVE, injection off, routing removed",
          ts=run.thread_ts)
    if run.current is not None or run.finished:
        return f"in progress: {run.current or run.finished}"  # a retry: the restarts go on
    return advance(ctx, request.id, time.time())


def _backup(ctx: JobContext, request: Request, run: Run) -> str:
    taken = take_backup(ctx, request, run.namespace)
    return runbook_text.emergency_backup(taken.id, taken.counts())


def plan(ctx: JobContext, namespace: str) -> Plan:
    """Steps 2 to 4 as the objects they write (each from the same plan as its step), read
    now; the backup and the restarts as words."""
    patches, create = _permissive_plan(ctx, namespace)
    found = [ObjectChange.patched("PeerAuthentication", namespace, pa["metadata"]["name"], pa,
                                  patch) for pa, patch in patches]
    if create is not None:
        found.append(ObjectChange("PeerAuthentication", namespace, "default", None, create))
    ns = ctx.kube.get_namespace(namespace)
    label, _, after = _injection_change(ns["metadata"].get("labels") or {})
    found.append(ObjectChange.patched("Namespace", "", namespace, ns,
                                      {"metadata": {"labels": {label: after}}}))
    found += [ObjectChange(kind, namespace, obj["metadata"]["name"], obj, None)
              for kind, obj in _routing_objects(ctx, namespace)]
    deployments = sorted(d["metadata"]["name"] for d in ctx.kube.list_deployments(namespace))
    return Plan(tuple(found), (plan_text.emergency_backup(namespace),
                               plan_text.emergency_restarts(deployments)))


def _permissive_plan(ctx: JobContext, namespace: str) -> tuple[list[tuple[Obj, Obj]], Obj | None]:
    """(PeerAuthentication, the merge patch that loosens it) for each one to loosen, and the
    namespace-wide one to create when there is none."""
    group, version = group_version(ctx, KIND_BY_NAME["PeerAuthentication"])
    plural = KIND_BY_NAME["PeerAuthentication"].plural
    existing = ctx.kube.list_custom(group, version, plural, namespace)
    patches: list[tuple[Obj, Obj]] = []
    namespace_wide = [pa for pa in existing if not (pa.get("spec") or {}).get("selector")]
    for pa in existing:
        spec = pa.get("spec") or {}
        strict_ports = {port: {"mode": "PERMISSIVE"}
                        for port, mode in (spec.get("portLevelMtls") or {}).items()
                        if (mode or {}).get("mode") == "STRICT"}
        mode = (spec.get("mtls") or {}).get("mode")
        # UNSET inherits the mesh-wide mode, which may be STRICT; DISABLE already takes
        # plain text, so it is left as it is.
        loosen = mode not in ("PERMISSIVE", "DISABLE") if pa in namespace_wide else mode == "STRICT"
        if loosen or strict_ports:
            patch: dict[str, Any] = {"mtls": {"mode": "PERMISSIVE"}}
            if strict_ports:
                patch["portLevelMtls"] = strict_ports
            patches.append((pa, {"spec": patch}))
    create = None if namespace_wide else {
        "apiVersion": f"{group}/{version}", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": namespace},
        "spec": {"mtls": {"mode": "PERMISSIVE"}},
    }
    return patches, create


def _permissive(ctx: JobContext, request: Request, run: Run) -> str:
    group, version = group_version(ctx, KIND_BY_NAME["PeerAuthentication"])
    plural = KIND_BY_NAME["PeerAuthentication"].plural
    patches, create = _permissive_plan(ctx, run.namespace)
    for pa, patch in patches:
        ctx.kube.patch_custom(group, version, plural, run.namespace, pa["metadata"]["name"],
                              patch)
    if create is not None:
        ctx.kube.create_custom(group, version, plural, run.namespace, create)
    return runbook_text.emergency_permissive([pa["metadata"]["name"] for pa, _ in patches],
                                             None if create is None else "default")


def _injection_change(labels: dict[str, str]) -> tuple[str, str | None, str | None]:
    """(label, before, after) that turns injection off."""
    if REVISION in labels:  # revision-based injection: without the label no revision injects
        return REVISION, labels[REVISION], None
    return INJECTION, labels.get(INJECTION), "disabled"


def _injection(ctx: JobContext, request: Request, run: Run) -> str:
    ns = ctx.kube.get_namespace(run.namespace)
    label, before, after = _injection_change(ns["metadata"].get("labels") or {})
    if before != after:
        ctx.kube.patch_namespace_labels(run.namespace, {label: after},
                                        resource_version(ns, f"namespace {run.namespace}"))
    return runbook_text.emergency_injection(label, before, after)


def _routing_objects(ctx: JobContext, namespace: str) -> list[tuple[str, Obj]]:
    """(kind, object) of every VirtualService, then every DestinationRule, by name."""
    found: list[tuple[str, Obj]] = []
    for kind_name in ("VirtualService", "DestinationRule"):
        kind = KIND_BY_NAME[kind_name]
        group, version = group_version(ctx, kind)
        objects = ctx.kube.list_custom(group, version, kind.plural, namespace)
        found += [(kind_name, o) for o in sorted(objects, key=lambda o: o["metadata"]["name"])]
    return found


def _routing(ctx: JobContext, request: Request, run: Run) -> str:
    removed: dict[str, list[str]] = {"VirtualService": [], "DestinationRule": []}
    for kind_name, obj in _routing_objects(ctx, run.namespace):
        kind = KIND_BY_NAME[kind_name]
        group, version = group_version(ctx, kind)
        # One by one: meshbot is never granted deletecollection.
        ctx.kube.delete_custom(group, version, kind.plural, run.namespace, obj["metadata"]["name"])
        removed[kind_name].append(obj["metadata"]["name"])
    return runbook_text.emergency_routing_removed(removed["VirtualService"],
                                              removed["DestinationRule"])


def _plan(ctx: JobContext, request: Request, run: Run) -> str:
    names = sorted(d["metadata"]["name"] for d in ctx.kube.list_deployments(run.namespace))
    run.pending, run.total = names, len(names)
    return runbook_text.emergency_restarts_planned(names)


# --- step 5: one Deployment at a time ------------------------------------------------------------


def rollout_incomplete(deployment: Obj) -> str | None:
    """Why the Deployment's rollout is not complete (as ``kubectl rollout status`` judges), or
    None when it is."""
    meta, spec, status = (deployment.get(k) or {} for k in ("metadata", "spec", "status"))
    wanted = int(spec.get("replicas", 1))
    observed = status.get("observedGeneration")
    if observed is None or int(observed) < int(meta.get("generation") or 0):
        return "the controller has not picked up the restart yet"
    updated = int(status.get("updatedReplicas") or 0)
    if updated < wanted:
        return f"{updated} of {wanted} pods updated"
    if int(status.get("replicas") or 0) > updated:
        return f"{int(status.get('replicas') or 0) - updated} old pods still terminating"
    available = int(status.get("availableReplicas") or 0)
    if available < wanted:
        return f"{available} of {wanted} updated pods available"
    return None


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) applied to ``labels``."""
    if not selector:
        return False  # an empty PDB selector matches nothing in policy/v1's practice here
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), set(expr.get("values") or [])
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}.get(op, False)
        if not ok:
            return False
    return True


def pdb_blocks(pdbs: list[Obj], deployment: Obj) -> str | None:
    """Why a PodDisruptionBudget of the Deployment's pods allows no disruption now, or None."""
    labels = ((deployment.get("spec") or {}).get("template") or {}).get("metadata", {})
    pod_labels = dict(labels.get("labels") or {})
    for pdb in pdbs:
        if selects((pdb.get("spec") or {}).get("selector") or {}, pod_labels):
            allowed = (pdb.get("status") or {}).get("disruptionsAllowed")
            if not allowed:  # absent: the disruption controller has not counted yet
                return f"PodDisruptionBudget `{pdb['metadata']['name']}` allows no disruption"
    return None


def advance(ctx: JobContext, request_id: str, now: float) -> str:
    """Move the restarts on by what the cluster allows now; schedule the next look."""
    run = _load(ctx, request_id)
    if run is None or run.finished:
        return run.finished if run else "gone"

    def say(text: str) -> None:
        report(ctx, run.channel, run.thread_ts, text)

    if run.current is not None:
        deployment = ctx.kube.get_deployment(run.namespace, run.current)
        template = (deployment.get("spec") or {}).get("template") or {}
        if (template.get("metadata") or {}).get("annotations", {}).get(RESTARTED_AT) != \
                run.restarted_at:
            # The job stopped between recording the restart and making it: make it now.
            deployment = ctx.kube.restart_deployment(run.namespace, run.current, run.restarted_at)
        reason = rollout_incomplete(deployment) or pdb_blocks(
            ctx.kube.list_pod_disruption_budgets(run.namespace), deployment)
        index = run.total - len(run.pending)
        if reason is not None:
            if now - run.current_since <= ROLLOUT_DEADLINE_S:
                return _schedule(ctx, run)
            run.finished = "stopped"
            _save(ctx, run)
            say(runbook_text.emergency_stuck(run.current, reason, now - run.current_since,
                                         run.pending))
            return "stopped"
        run.current = None
        _save(ctx, run)
        say(runbook_text.emergency_restarted(deployment["metadata"]["name"], index, run.total))
    if not run.pending:
        run.finished = "done"
        _save(ctx, run)
        say(runbook_text.emergency_done(run.namespace, run.total))
        return "done"
    name = run.pending.pop(0)
    run.current, run.current_since = name, now
    run.restarted_at = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    _save(ctx, run)  # first: a retry re-stamps the same time, which is no second restart
    ctx.kube.restart_deployment(run.namespace, name, run.restarted_at)
    say(runbook_text.emergency_restarting(name, run.total - len(run.pending), run.total))
    return _schedule(ctx, run)


def _schedule(ctx: JobContext, run: Run) -> str:
    run.polls += 1
    _save(ctx, run)
    digest = hashlib.sha256(run.request_id.encode()).hexdigest()[:24]
    Queue(ctx.settings.queue_name + URGENT_SUFFIX, connection=ctx.redis,
          serializer=JSONSerializer).enqueue_in(
        timedelta(seconds=POLL_S), CONTINUE_TASK, run.request_id,
        job_id=f"emergency-{digest}-{run.polls}", retry=RETRY, result_ttl=600,
        failure_ttl=24 * 3600,
    )
    return f"waiting on {run.current}"


def continue_job(request_id: str) -> str:
    """RQ entry point (JSON-safe argument): look at the rollout again, in its cluster."""
    ctx = context.current()
    run = _load(ctx, request_id)
    cluster = run.cluster if run is not None else None
    with cluster_scope.scope(cluster):
        return advance(ctx.for_cluster(cluster), request_id, time.time())
