"""`/mesh migrate`: its plan, its one status message, and what each step tells the thread.

Pure: facts in, Slack mrkdwn out. The workflow's record is not imported (rendering knows no
jobs); the caller passes what is shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rendering.common import duration, escape, people, user

PHASE_WORDS = {
    1: "readiness gate: the control plane's checks (istiod replicas and zones, PDB, HPA, "
       "ingress gateway); a failing check stops the workflow unless `force=yes`",
    2: "pilot services, one at a time: sidecar injection on the service's Deployments, "
       "rollout complete, ready pods with the sidecar",
    3: "core services, one at a time: sidecar injection, rollout complete, then the error "
       "rate watched for {watch} (above {threshold:g} % → undo, stop)",
    4: "critical services, blue-green: backup, a green copy with the sidecar, DestinationRule "
       "subsets blue/green, header `canary: true` → green and 90/10 under meshbot's analysis "
       "for {critical_watch} (a breach of the service's SLOs, or green worse than blue → back "
       "to blue, stop), cut over to green (approval), remove blue",
    5: "finalize: namespace injection label, ISTIO_MUTUAL DestinationRules, PeerAuthentication "
       "STRICT, Telemetry ({providers})",
}


def _names(names: Sequence[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) or "(none)"


def plan_root(namespace: str, by: str, phases: Sequence[int], tiers: Mapping[int, Sequence[str]],
              approvals: Sequence[str], settings: Mapping[str, object], dry_run: bool,
              others: Sequence[str] = ()) -> str:
    head = ":mag: *Migration plan (dry run)*" if dry_run else ":ship: *Migration*"
    lines = [f"{head} of namespace `{namespace}` onto the mesh, asked by {user(by)}"]
    for phase in phases:
        words = PHASE_WORDS[phase].format(**settings)
        services = tiers.get(phase)
        order = f" — in order: {_names(services)}" if services is not None else ""
        lines.append(f"*Phase {phase}* {words}{order}")
    if others:
        lines.append(f"Not in the runbook's tiers, left alone: {_names(others)}")
    lines.append("Needs approval: " + ("; ".join(approvals) if approvals else "nothing"))
    if dry_run:
        lines.append("Nothing was changed. Run it without `dry-run` to start.")
    else:
        lines.append(f"Control it with `/mesh migrate {namespace} pause|resume|abort`.")
    return "\n".join(lines)


def status(namespace: str, state: str, phase: int | None, phase_name: str, service: str | None,
           step: str | None, done: int, total: int, last: str, note: str) -> str:
    icon = {"running": ":arrows_counterclockwise:", "paused": ":double_vertical_bar:",
            "aborting": ":rewind:", "done": ":white_check_mark:", "stopped": ":octagonal_sign:",
            "aborted": ":leftwards_arrow_with_hook:"}.get(state, ":grey_question:")
    lines = [f"{icon} *Migration of `{namespace}`: {state}* — step {done}/{total}"]
    if phase is not None:
        where = f"phase {phase} ({phase_name})"
        if service:
            where += f", `{service}`"
        if step:
            where += f", {step.replace('_', ' ')}"
        lines.append(where)
    if last:
        lines.append(f"Last numbers: {last}")
    if note:
        lines.append(note)
    return "\n".join(lines)


def numbers(percent: float | None, rps: float | None, threshold: float) -> str:
    if percent is None:
        return "no traffic seen yet"
    return f"{percent:.2f} % errors at {rps or 0.0:.1f} req/s (threshold {threshold:g} %)"


def no_traffic_seen(watch_s: float) -> str:
    return f"no traffic seen in {duration(watch_s)} of watching (its analysis.no_data: rollback)"


def no_traffic_holding(service: str, watch_s: float) -> str:
    return (f"`{service}`: watched {duration(watch_s)} without seeing any traffic — no evidence, "
            "so no pass: holding until requests show (its analysis.no_data: hold; "
            "`/mesh migrate <namespace> abort` puts it back)")


def watch_left(what: str, left_s: float) -> str:
    return f"watching {what}: {duration(max(round(left_s), 0))} left"


# --- refusals ----------------------------------------------------------------------------------

def no_services(namespace: str) -> str:
    return (f"no service of meshbot's policy lives in namespace `{namespace}`: there is "
            "nothing to migrate; nothing was changed")


def own_namespace(namespace: str) -> str:
    return (f"`{namespace}` is meshbot's own namespace and is never migrated onto the mesh: "
            "meshbot must stay reachable to roll the mesh back; nothing was changed")


def no_app_label(namespace: str, names: Sequence[str]) -> str:
    return (f"Deployments {_names(names)} in `{namespace}` have no `app` label: meshbot finds a "
            "service's Deployments by it, so it cannot tell which service they belong to. "
            "Label them, then migrate; nothing was changed")


def no_deployments(service: str, namespace: str) -> str:
    return (f"service `{service}` has no Deployment labelled `app={service}` in `{namespace}`; "
            "nothing was changed")


def already_running(namespace: str, by: str, state: str) -> str:
    return (f"a migration of `{namespace}` is already {state} (started by {user(by)}); "
            f"`/mesh migrate {namespace} pause|resume|abort` controls it; nothing was changed")


def not_running(namespace: str) -> str:
    return f"no migration of `{namespace}` is running; nothing was changed"


def cannot(namespace: str, action: str, state: str) -> str:
    return f"the migration of `{namespace}` is {state}: it cannot be {action}; nothing was changed"


def rollout_in_progress(service: str, weights: Mapping[str, int]) -> str:
    split = " / ".join(f"{k} {v}" for k, v in weights.items())
    return (f"`{service}` is mid-rollout ({split}): finish or roll it back before its "
            "blue-green migration")


def rollout_running(service: str, phase: str) -> str:
    return (f"`{service}` has a rollout {phase.replace('_', ' ')}: promote or roll it back "
            "before its blue-green migration")


# --- the thread --------------------------------------------------------------------------------

def control(namespace: str, action: str, by: str) -> str:
    verb = {"pause": "paused", "resume": "resumed", "abort": "asked to abort"}[action]
    more = (" Every service is left migrated or as it was: the one in flight is put back (or, "
            "past its cut-over, finished)." if action == "abort" else "")
    return f"Migration of `{namespace}` {verb} by {user(by)}.{more}"


def gate(rows: Sequence[tuple[str, bool, str]], forced: bool) -> str:
    lines = ["*Phase 1: readiness gate*"]
    lines += [f"{':white_check_mark:' if ok else ':x:'} {name}: {escape(detail)}"
              for name, ok, detail in rows]
    failing = [name for name, ok, _ in rows if not ok]
    if not failing:
        lines.append("Every check passes.")
    elif forced:
        lines.append(f"{len(failing)} failing, forced past with approvals (`force=yes`).")
    else:
        lines.append(f"{len(failing)} failing: the migration stops here. Fix them, or start "
                     "again with `force=yes` (it needs the tier's emergency approvals).")
    return "\n".join(lines)


def injected(service: str, names: Sequence[str], already: Sequence[str]) -> str:
    text = f"`{service}`: sidecar injection set on {_names(names)}"
    if already:
        text += f" (already on {_names(already)})"
    return text


def service_migrated(service: str, phase: int, detail: str) -> str:
    return f":white_check_mark: `{service}` migrated (phase {phase}): {detail}"


def undone(service: str, names: Sequence[str], why: str) -> str:
    return (f":rewind: `{service}` undone — previous pod template restored on {_names(names)}: "
            f"{why}. The migration stops here.")


def green_created(service: str, names: Sequence[str]) -> str:
    return f"`{service}`: green copies {_names(names)} created with the sidecar"


def split_set(service: str, green_weight: int, watch_s: float, interval_s: float) -> str:
    return (f"`{service}`: header `canary: true` → green, the rest blue {100 - green_weight} / "
            f"green {green_weight}, under meshbot's analysis for {duration(watch_s)} (green "
            f"against its SLOs and compared with blue, checked every {duration(interval_s)}; "
            "a breach sends all traffic back to blue)")


def green_held(service: str, watch_s: float, passed: int, values: Sequence[str]) -> str:
    shown = f": {'; '.join(values)}" if values else ""
    return (f"`{service}` green held for {duration(watch_s)} under the analysis "
            f"({passed} check{'s' if passed != 1 else ''} passed){shown}")


def green_not_yet(service: str, phase: str, passed: int) -> str:
    if passed == 0:
        return (f"`{service}` green: the monitoring window is over, but no check has passed "
                f"yet (the analysis says {phase.replace('_', ' ')}); waiting for one")
    return (f"`{service}` green: the monitoring window is over, but its latest check did not "
            f"pass (the analysis says {phase.replace('_', ' ')}); waiting for one that does")


def analysis_ended(phase: str, detail: str, by_command: bool = False) -> str:
    said = f" ({detail})" if detail else ""
    if by_command:
        return f"green was {phase.replace('_', ' ')} by a command{said}"
    return f"the analysis {phase.replace('_', ' ')} green{said}"


def back_to_blue(service: str, why: str) -> str:
    return (f":rewind: `{service}` back to blue at once — all traffic on blue, the green copies "
            f"removed, blue untouched: {why}. The migration stops here.")


def cut_over(service: str, approvers: Sequence[str]) -> str:
    by = f" (approved by {people(approvers)})" if approvers else ""
    return f"`{service}`: 100 % on green{by}"


def blue_removed(service: str, names: Sequence[str]) -> str:
    return f"`{service}`: blue Deployments {_names(names)} removed"


def waiting_approval(what: str, count: int) -> str:
    plural = "approval" if count == 1 else "approvals"
    return f"waiting for {count} {plural}: {what}"


def approval_refused(what: str, state: str) -> str:
    return f"the approval for {what} was {state}: the migration stops here (nothing more changed)"


def finalized(namespace: str, what: Sequence[str]) -> str:
    return f"`{namespace}` finalized: " + "; ".join(what)


def finished(namespace: str, started_s: float) -> str:
    return f":tada: Migration of `{namespace}` complete in {duration(max(round(started_s), 0))}."


def aborted(namespace: str, detail: str) -> str:
    return f":leftwards_arrow_with_hook: Migration of `{namespace}` aborted: {detail}"
