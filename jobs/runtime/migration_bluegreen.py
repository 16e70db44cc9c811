"""Phase 4 of `/mesh migrate`: a critical service moved onto the mesh by blue-green.

Blue is what serves now: the Deployments whose pods the live subset selects. Green is their copy
with the sidecar and ``version: green``. The DestinationRule gains subsets blue and green, the
VirtualService a ``canary: true`` header route to green and a 90/10 split. The split is handed
to meshbot's analysis as a canary rollout of its own (subsets blue → green, versions blue's →
``green``): the ticker judges it like any canary — the SLO guards, the sequential comparison of
green with blue, its looks between checks — and rolls it back to blue 100 itself on a breach;
the workflow then puts the rest back. Once green has held for the monitoring window, with the
approvals, the rollout is promoted and the split goes 100 % green; then the live subset is
pointed at the green pods and the routes put back as they were (the policy's subsets keep
working), and blue is removed.

Until the cut-over the service can always go back to blue: the routes and subsets as they were,
the green copies removed, blue never touched. From the cut-over on it is only finished.
"""

from __future__ import annotations

from typing import Any

from jobs.adapters.kube import Obj
from jobs.adapters.rollout_store import TICK_OWNER
from jobs.domain import migration as model
from jobs.domain import migration_bodies as bodies
from jobs.domain import rollout as machine
from jobs.domain.gitops import ensure_not_gitops_owned
from jobs.domain.rollout import Event, Phase, Rollout
from jobs.domain.server_fields import resource_version
from jobs.runtime.handlers.backup import take_backup
from jobs.runtime.handlers.common import subsets_of
from jobs.runtime.migration_phases import deployments_of, inject, rollout
from jobs.runtime.migration_run import Again, Done, Outcome, Run, Stop, Wait, need_approval
from meshbot.commands import Command, Request, Verb
from meshbot.errors import MeshConflict, MeshNotFound, Refused
from rendering import migrate as words

NET = "networking.istio.io"


def _first(run: Run, service: str, kind: str) -> model.Step:
    index = next(i for i in run.workflow.service_steps(service, 4)
                 if run.workflow.steps[i].kind == kind)
    return run.workflow.steps[index]


def facts(run: Run, service: str) -> dict[str, Any]:
    """What the service's backup step noted: its routes and subsets as they were, blue, idle."""
    return run.memo(_first(run, service, "backup"))


def vs_name(run: Run, service: str) -> str:
    refs = [r for r in run.view(service).virtual_services if "/" not in r
            or r.split("/", 1)[0] == run.namespace]
    return refs[0].split("/")[-1] if refs else service


def _vs(run: Run, name: str) -> Obj:
    return run.ctx.kube.get_virtual_service(run.namespace, name)


def _dr(run: Run, name: str) -> Obj:
    return run.ctx.kube.get_destination_rule(run.namespace, name)


def read_facts(run: Run, service: str) -> dict[str, Any]:
    """Everything phase 4 needs to know of ``service`` before it writes anything; Refused when
    the service cannot go through a blue-green now."""
    view = run.view(service)
    live = subsets_of(run.ctx, view).stable
    name = vs_name(run, service)
    vs, dr = _vs(run, name), _dr(run, service)
    for obj in (vs, dr):
        ensure_not_gitops_owned(obj, allowed=view.gitops_allowed)
    http = list((vs.get("spec") or {}).get("http") or [])
    weights = bodies.live_weights(http)
    if any(w for subset, w in weights.items() if subset != live):
        raise Refused(words.rollout_in_progress(service, weights))
    current = run.ctx.store.get(service)
    if current is not None and not current.phase.terminal \
            and current.id != analysis_id(run, service):
        raise Refused(words.rollout_running(service, current.phase.value))
    blue_labels = bodies.subset_labels(dr, live)
    if blue_labels is None:
        raise Refused(f"DestinationRule `{service}` has no subset `{live}`")
    blue: list[str] = []
    idle: list[str] = []
    for deployment in deployments_of(run, service):
        labels = bodies.template_labels(deployment)
        (blue if model.selects(labels, blue_labels) else idle).append(bodies.name_of(deployment))
    return {"vs": name, "http": http, "dr": service,
            "subsets": list((dr.get("spec") or {}).get("subsets") or []), "live": live,
            "blue_labels": blue_labels, "blue": blue, "idle": idle,
            "version_label": view.analysis.version_label}


def backup(run: Run, step: model.Step) -> Outcome:
    service = step.service or ""
    memo = run.memo(step)
    if "blue" not in memo:
        run.remember(step, **read_facts(run, service))
        return Again()
    if "backup" not in memo:
        wf = run.workflow
        request = Request(id=f"migrate:{wf.id}:{service}", user=wf.requester,
                          channel=wf.channel, command=Command(verb=Verb.BACKUP,
                                                              target=run.namespace))
        taken = take_backup(run.ctx, request, run.namespace)
        run.remember(step, backup=taken.id)
        run.audit(service, "done", f"backup {taken.id} before the blue-green",
                  after=f"backup {taken.id}")
        run.say(f"`{service}`: backup `{taken.id}` taken")
    return Done()


def _green_labels(info: dict[str, Any]) -> dict[str, str]:
    return {str(info["version_label"]): bodies.GREEN}


def green(run: Run, step: model.Step) -> Outcome:
    service = step.service or ""
    info = facts(run, service)
    by_name = {bodies.name_of(d): d for d in deployments_of(run, service)}
    for name in info["blue"]:
        body = bodies.green_copy(by_name[name], info["version_label"], run.workflow.id)
        try:
            run.work.create_deployment(run.namespace, body)
        except MeshConflict:  # this step's first run created it
            continue
        run.audit(service, "done", f"Deployment {run.namespace}/{bodies.green_name(name)} "
                  "created (green, sidecar)", after="green copy")
    run.say(words.green_created(service, [bodies.green_name(n) for n in info["blue"]]))
    return Done()


def greens(run: Run, service: str) -> list[Obj]:
    found = run.ctx.kube.find_deployments(run.namespace, {
        "app": service, bodies.MIGRATION_LABEL: run.workflow.id})
    return sorted(found, key=bodies.name_of)


def green_rollout(run: Run, step: model.Step) -> Outcome:
    service = step.service or ""
    memo = run.memo(step)
    if "since" not in memo:
        run.remember(step, since=run.now)
        return Again()
    pending = [f"`{bodies.name_of(d)}`: {why}" for d in greens(run, service)
               for complete, why in [model.rollout_complete(d)] if not complete]
    info = facts(run, service)
    wanted = sum(int((d.get("spec") or {}).get("replicas", 1)) for d in greens(run, service))
    ready, _ = model.ready_with_sidecar(run.ctx.kube.list_pods(
        run.namespace, {"app": service, **_green_labels(info)}))
    if not pending and ready >= wanted:
        return Done()
    if run.now - float(memo["since"]) > run.ctx.policy.migrate.rollout_timeout:
        return to_blue(run, service, "the green copies did not become ready")
    return Wait("green: " + ("; ".join(pending) or f"{ready} of {wanted} pods ready"))


def _write_vs(run: Run, service: str, http: list[Obj]) -> bool:
    info = facts(run, service)
    vs = _vs(run, info["vs"])
    if (vs.get("spec") or {}).get("http") == http:
        return False
    run.ctx.kube.patch_virtual_service_route(run.namespace, info["vs"], http,
                                             resource_version(vs, f"VirtualService {info['vs']}"))
    return True


def _write_subsets(run: Run, service: str, subsets: list[Obj]) -> bool:
    info = facts(run, service)
    dr = _dr(run, info["dr"])
    if (dr.get("spec") or {}).get("subsets") == subsets:
        return False
    group, version = run.ctx.settings.networking_group_version
    run.ctx.kube.patch_custom(group, version, "destinationrules", run.namespace, info["dr"], {
        "metadata": {"resourceVersion": resource_version(dr, f"DestinationRule {info['dr']}")},
        "spec": {"subsets": subsets}})
    return True


def split(run: Run, step: model.Step) -> Outcome:
    service = step.service or ""
    info = facts(run, service)
    subsets = bodies.with_subsets(info["subsets"], {bodies.BLUE: info["blue_labels"],
                                                    bodies.GREEN: _green_labels(info)})
    if _write_subsets(run, service, subsets):
        run.audit(service, "done", "DestinationRule subsets blue and green added")
    if _write_vs(run, service, bodies.blue_green_http(info["http"], bodies.GREEN_WEIGHT)):
        run.audit(service, "done", "canary: true → green; blue 90 / green 10",
                  before=str(bodies.live_weights(info["http"])), after="blue 90 / green 10")
    if analysed(run, service) is None:
        run.ctx.store.put(_analysis(run, service, info))
        run.say(words.split_set(service, bodies.GREEN_WEIGHT,
                                run.ctx.policy.migrate.critical_watch,
                                run.view(service).analysis.interval))
    return Done()


def analysis_id(run: Run, service: str) -> str:
    return f"migrate:{run.workflow.id}:{service}"


def analysed(run: Run, service: str) -> Rollout | None:
    """The rollout the analysis judges green's 10 % as (None: not handed over yet)."""
    current = run.ctx.store.get(service)
    return current if current is not None and current.id == analysis_id(run, service) else None


def _analysis(run: Run, service: str, info: dict[str, Any]) -> Rollout:
    """Green at 10 % as a canary the analysis watches at that weight until the workflow ends
    it: its thread is the workflow's, its status message the workflow's own (not the root)."""
    wf, analysis = run.workflow, run.view(service).analysis
    started = machine.start(
        rollout_id=analysis_id(run, service), service=service, namespace=run.namespace,
        steps=(bodies.GREEN_WEIGHT,), fixed=True, interval_s=analysis.interval,
        failure_threshold=analysis.failure_threshold, no_data_policy=str(analysis.no_data),
        deadline_s=analysis.deadline, requested_by=wf.requester, channel=wf.channel,
        now=run.now)
    return started.model_copy(update={
        "thread_ts": wf.thread_ts, "status_ts": None,
        "title": f"migrate {run.namespace}: `{service}` green",
        "stable_subset": bodies.BLUE, "canary_subset": bodies.GREEN,
        "canary_version": bodies.GREEN,
        "stable_version": str(info["blue_labels"].get(info["version_label"], ""))})


def _broken(run: Run, service: str, current: Rollout | None) -> Outcome | None:
    """Back to blue when the analysis rolled green back (``current``, its rollout as read, or
    gone); None while it still watches green."""
    if current is not None and not current.phase.terminal:
        return None
    if current is None:
        return to_blue(run, service, "its analysis record is gone")
    if current.phase is Phase.PROMOTED:
        return None
    last = current.history[-1]
    by_command = last.event in (Event.ROLLBACK, Event.ABORT)  # `/mesh rollback` in a hurry
    return to_blue(run, service, words.analysis_ended(current.phase.value, last.detail,
                                                      by_command))


def _end_analysis(run: Run, service: str, why: str) -> None:
    """The analysis stops judging green (before anything is put back, so no tick writes after
    it); a rollback it committed but had not written yet is the workflow's to finish."""
    wanted = analysis_id(run, service)
    run.ctx.store.update(service, lambda cur: machine.apply(cur, Event.ABORT, run.now, why)
                         if cur is not None and cur.id == wanted and not cur.phase.terminal
                         else None)
    run.ctx.store.mark_applied(service, TICK_OWNER)


def watch(run: Run, step: model.Step, *, may_finish: bool = True) -> Outcome:
    """Green under the analysis for the monitoring window: done once the window is over and
    green's latest check passed; the analysis rolling it back → blue at once."""
    service = step.service or ""
    current = analysed(run, service)
    broken = _broken(run, service, current)
    if broken is not None:
        return broken
    assert current is not None  # a missing one is broken
    window = run.ctx.policy.migrate.critical_watch
    found = run.watch_window(step, window)
    if found is None:
        return Again()
    elapsed = found[0]
    if current.last_values:
        run.measured(f"`{service}` green: " + "; ".join(current.last_values))
    if elapsed >= window and may_finish and machine.promotable(current):
        run.say(words.green_held(service, window, current.passed_checks,
                                 list(current.last_values)))
        return Done()
    if elapsed >= window:
        return Wait(words.green_not_yet(service, current.phase.value, current.passed_checks))
    return Wait(words.watch_left(f"`{service}` green", window - elapsed))


def approve(run: Run, step: model.Step) -> Outcome:
    service = step.service or ""
    broken = _broken(run, service, analysed(run, service))
    if broken is not None:
        return broken
    return need_approval(run, step, run.view(service).approvals.promote,
                         f"cutting `{service}` over to green (100 %)")


def cutover(run: Run, step: model.Step) -> Outcome:
    """The analysis's rollout promoted first (no tick judges green after it), then 100 %."""
    service = step.service or ""
    info = facts(run, service)
    current = analysed(run, service)
    broken = _broken(run, service, current)
    if broken is not None:
        return broken
    assert current is not None  # a missing one is broken
    if current.phase is not Phase.PROMOTED:
        if not machine.promotable(current):
            return Wait(words.green_not_yet(service, current.phase.value,
                                            current.passed_checks))
        wanted = current.id
        promoted = run.ctx.store.update(service, lambda cur: machine.apply(
            cur, Event.PROMOTE, run.now, "migrate: cut over to green")
            if cur is not None and cur.id == wanted and machine.promotable(cur) else None)
        if promoted is None or promoted.phase is not Phase.PROMOTED:
            return Again()  # judged meanwhile: look again
    if _write_vs(run, service, bodies.blue_green_http(info["http"], 100)):
        run.audit(service, "done", "cut over: green 100", before="blue 90 / green 10",
                  after="blue 0 / green 100")
    approvers = run.workflow.approvals.get(_first(run, service, "approve").key, ())
    run.say(words.cut_over(service, approvers))
    return Done()


def settle(run: Run, step: model.Step) -> Outcome:
    """The live subset now selects the green pods; the routes are put back as they were (the
    policy's subsets name the live one), then the blue/green subsets go."""
    service = step.service or ""
    info = facts(run, service)
    live = info["live"]
    pointed = bodies.with_subsets(
        bodies.with_subsets(info["subsets"], {bodies.BLUE: info["blue_labels"],
                                              bodies.GREEN: _green_labels(info)}),
        {live: _green_labels(info)})
    _write_subsets(run, service, pointed)
    _write_vs(run, service, info["http"])
    final = bodies.without_subsets(pointed, [bodies.BLUE, bodies.GREEN])
    if _write_subsets(run, service, final):
        run.audit(service, "done", f"subset {live} now selects the green pods; routes as "
                  "before the blue-green", after=f"{live}: {_green_labels(info)}")
    return Done()


def remove_blue(run: Run, step: model.Step) -> Outcome:
    service = step.service or ""
    info = facts(run, service)
    for name in info["blue"]:
        try:
            run.work.delete_deployment(run.namespace, name)
        except MeshNotFound:
            continue
        run.audit(service, "done", f"Deployment {run.namespace}/{name} (blue) deleted",
                  before="blue", after="deleted")
    run.say(words.blue_removed(service, info["blue"]))
    return Done()


def inject_idle(run: Run, step: model.Step) -> Outcome:
    """Deployments of the service that no subset routes to are injected in place."""
    return inject(run, step, names=list(facts(run, step.service or "")["idle"]))


def idle_rollout(run: Run, step: model.Step) -> Outcome:
    service = step.service or ""
    outcome = rollout(run, step, names=list(facts(run, service)["idle"]))
    if isinstance(outcome, Done):
        run.say(words.service_migrated(service, 4, "blue-green done, green serves"))
    return outcome


def to_blue(run: Run, service: str, why: str) -> Outcome:
    put_back(run, service)
    run.say(words.back_to_blue(service, why))
    return Stop(f"`{service}` back to blue: {why}")


def put_back(run: Run, service: str) -> None:
    """The analysis stopped, then traffic (routes as they were), then the subsets, then the
    green copies."""
    backup_step = _first(run, service, "backup")
    if "blue" not in run.memo(backup_step):
        return  # nothing was written for this service yet
    _end_analysis(run, service, "migrate: green put back to blue")
    info = facts(run, service)
    if _write_vs(run, service, info["http"]):
        run.audit(service, "rolled back", "routes as before the blue-green (all on blue)",
                  after=str(bodies.live_weights(info["http"])))
    if _write_subsets(run, service, list(info["subsets"])):
        run.audit(service, "rolled back", "DestinationRule subsets as before")
    for deployment in greens(run, service):
        name = bodies.name_of(deployment)
        try:
            run.work.delete_deployment(run.namespace, name)
        except MeshNotFound:
            continue
        run.audit(service, "rolled back", f"Deployment {run.namespace}/{name} (green) deleted")


STEPS = {"backup": backup, "green": green, "green_rollout": green_rollout, "split": split,
         "watch": watch, "approve": approve, "cutover": cutover, "settle": settle,
         "remove_blue": remove_blue, "inject_idle": inject_idle, "idle_rollout": idle_rollout}
