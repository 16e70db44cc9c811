"""Canary, rollout, promote, rollback and status: thread roots, progress and the analysis.

Pure functions: facts in, Slack mrkdwn out. Every message carries its essentials in ``text``,
names people as ``<@U…>`` and writes weights as ``stable 90 / canary 10``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from meshbot.commands import Command, Verb
from rendering.common import (
    _values,
    phase_name,
    user,
    weight_change,
    weights,
)


def weights_applied(before: tuple[int, int], after: tuple[int, int],
                    names: tuple[str, str], virtual_services: Iterable[str]) -> str:
    listed = ", ".join(f"`{vs}`" for vs in virtual_services)
    return (f":white_check_mark: Weights applied on {listed}: now "
            f"{weights(after[0], after[1], *names)} (was {weights(before[0], before[1], *names)})")


def rollback_root(service: str, namespace: str, requester: str, verb: str = "rollback") -> str:
    who = user(requester) if requester.startswith(("U", "W")) else (requester or "meshbot")
    title = "Abort" if verb == "abort" else "Rollback"
    return f":rewind: *{title}* `{service}` ({namespace}) requested by {who}"


def rolled_back(before: tuple[int, int], names: tuple[str, str]) -> str:
    return (f":rewind: Rolled back: all traffic on {names[0]} — {weights(100, 0, *names)} "
            f"(was {weights(before[0], before[1], *names)})")


def already_stable(names: tuple[str, str]) -> str:
    return f"Nothing to roll back: traffic is already {weights(100, 0, *names)}."


def rollout_header(command: Command, service: str, namespace: str, requester: str,
                   before: tuple[int, int], after: tuple[int, int],
                   names: tuple[str, str]) -> str:
    kind = "Canary" if command.verb is Verb.CANARY else "Rollout"
    plan = ""
    if command.verb is Verb.ROLLOUT and command.steps:
        plan = f" steps {', '.join(f'{s}%' for s in command.steps)};"
    return (f":large_yellow_circle: *{kind}* `{service}` ({namespace}) requested by "
            f"{user(requester)}:{plan} {weight_change(before, after, names)}")


def promoted(before: tuple[int, int], names: tuple[str, str],
             approvers: Sequence[str]) -> str:
    by = f" (approved by {', '.join(user(a) for a in approvers)})" if approvers else ""
    return (f":rocket: Promoted: all traffic on {names[1]} — {weights(0, 100, *names)} "
            f"(was {weights(before[0], before[1], *names)}){by}. {names[1]} is now live.")


def paused_or_resumed(action: str, requester: str, weight: int) -> str:
    icon = ":double_vertical_bar:" if action == "pause" else ":arrow_forward:"
    verb = "Paused" if action == "pause" else "Resumed"
    return f"{icon} {verb} by {user(requester)} at canary {weight}%"


class RolloutLike(Protocol):
    """What the status lines read from a rollout (kept structural: bot does not import jobs)."""

    @property
    def phase(self) -> Any: ...
    @property
    def fixed(self) -> bool: ...
    @property
    def step_index(self) -> int: ...
    @property
    def steps(self) -> tuple[int, ...]: ...
    @property
    def weight(self) -> int: ...
    @property
    def failed_checks(self) -> int: ...
    @property
    def failure_threshold(self) -> int: ...
    @property
    def requested_by(self) -> str: ...
    @property
    def last_values(self) -> tuple[str, ...]: ...


def rollout_lines(rollout: RolloutLike) -> list[str]:
    lines = [f"Rollout: {phase_name(rollout.phase)}, canary {rollout.weight}%"]
    if not rollout.fixed:
        lines.append(f"Step {rollout.step_index + 1}/{len(rollout.steps)} "
                     f"(steps {', '.join(f'{s}%' for s in rollout.steps)})")
    lines.append(f"Requested by {user(rollout.requested_by)}; failed checks "
                 f"{rollout.failed_checks}/{rollout.failure_threshold}")
    lines += [f"• {value}" for value in rollout.last_values]
    return lines


def status(service: str, namespace: str, current: tuple[int, int], names: tuple[str, str],
           lines: Sequence[str]) -> str:
    head = f":bar_chart: *Status* `{service}` ({namespace}): {weights(*current, *names)}"
    return "\n".join([head, *(lines or ["Rollout: none"])])


def automatic_rollback(service: str, failing: Sequence[str], failed_checks: int,
                       no_data: bool) -> str:
    if no_data:
        return (f":rotating_light: Automatic rollback of `{service}`: no SLO evidence past the "
                f"deadline ({_values(failing)}). All traffic is back on stable.")
    return (f":rotating_light: Automatic rollback of `{service}` after {failed_checks} failed "
            f"checks in a row: {_values(failing)}. All traffic is back on stable.")


def rollback_alert(service: str, reason: str) -> str:
    # The reason is the thread's own report: its emoji once is enough.
    return (f":rotating_light: *Alert* `{service}` was rolled back automatically. "
            f"{reason.removeprefix(':rotating_light: ')}")


def step_advanced(index: int, count: int, weight: int, lines: Sequence[str]) -> str:
    return (f":arrow_up: Step {index + 1}/{count}: canary now {weight}% — the previous step "
            f"passed ({_values(lines)})")


def step_needs_approval(weight: int, lines: Sequence[str]) -> str:
    return (f":raised_hand: The step passed ({_values(lines)}), but the next one, canary "
            f"{weight}%, needs approval: the request is posted in the channel. Checks go on "
            "at the current weight meanwhile.")


def ready_to_promote(service: str, lines: Sequence[str]) -> str:
    return (f":white_check_mark: Last step passed ({_values(lines)}). `{service}` is ready: "
            f"`/mesh promote {service}` sends all traffic to the canary.")


def holding(failing: Sequence[str], policy: str, deadline_s: float) -> str:
    then = "roll back" if policy == "rollback" else "keep holding and alert"
    return (f":pause_button: Holding: no SLO evidence ({_values(failing)}). Not advancing; "
            f"after {deadline_s:g}s without data meshbot will {then}.")


def holding_too_long(service: str, deadline_s: float, failing: Sequence[str]) -> str:
    return (f":rotating_light: *Alert* `{service}` has held for more than {deadline_s:g}s without "
            f"SLO evidence ({_values(failing)}). Check its traffic and Prometheus, then "
            f"`/mesh rollback {service}` or `/mesh resume {service}`.")


def settled_after_failure(weights_text: str) -> str:
    return (f":rewind: The last change to this service ended without writing its weights; to "
            f"keep the mesh and this thread in agreement meshbot rolled back: {weights_text}.")


def reapply_impossible(weights_text: str, reason: str) -> str:
    return (f":warning: meshbot could not write {weights_text} and will not keep trying: "
            f"{reason}. Check the service with `/mesh status`.")


def write_refused(service: str, decided: str, live: str, reason: str, *,
                  rolling_back: bool) -> str:
    """A weight write the Kubernetes API refused for good: the rollout is paused at ``live``
    (what the VirtualService still says) and nothing is tried again until someone acts."""
    then = (f"`/mesh rollback {service}`" if rolling_back
            else f"`/mesh resume {service}` (or `/mesh rollback {service}`)")
    return (f":warning: meshbot could not write {decided} on `{service}`: {reason}. Traffic is "
            f"still {live}; the rollout is paused there and meshbot will not try again on its "
            f"own: fix what refused the write, then {then}.")


def reapplied(weights_text: str) -> str:
    # Its writer may have died (a worker, the ticker) or met an error it left to the
    # reconcile (a 5xx): the words must fit both.
    return (f":wrench: The weights decided for this service had not reached its "
            f"VirtualService (their writer stopped, or its write did not go through); meshbot "
            f"wrote them now: {weights_text}.")


def check_failed(failed: int, threshold: int, failing: Sequence[str]) -> str:
    return (f":warning: Check failed ({failed}/{threshold} before automatic rollback): "
            f"{_values(failing)}")


def no_ready_canary(service: str, subset: str, selector: str, namespace: str) -> str:
    return (f"the {subset!r} subset of {service} has no ready pods (selector {selector} in "
            f"namespace {namespace}); no traffic was shifted and nothing was changed. Deploy it "
            "and wait until it is ready.")

def _share(events: float, requests: float) -> str:
    if requests <= 0:
        return "no requests"
    rate = 100 * events / requests
    shown = f"{rate:.2f}" if rate < 10 else f"{rate:.1f}"
    return f"{shown}% ({events:,.0f}/{requests:,.0f})"


def _e(value: float) -> str:
    return f"{value:.3g}" if 1e-3 <= value < 1e4 else f"{value:.1e}"


def comparison_line(test: str, canary: tuple[float, float], stable: tuple[float, float],
                    log_e: float, threshold: float, bound_ms: float | None = None) -> str:
    """One sequential test against the stable: ``canary``/``stable`` are (events, requests)
    since the step began; the e-value (exp ``log_e``) against 1/alpha; the requests it rests
    on."""
    what = f"slower than {bound_ms:g} ms" if bound_ms is not None else "5xx"
    e_value = math.exp(min(log_e, 700.0))
    verdict = "≥" if log_e >= math.log(threshold) else "<"
    return (f"{test} vs stable ({what}): canary {_share(*canary)} vs stable {_share(*stable)}; "
            f"e = {_e(e_value)} {verdict} 1/α = {threshold:g} (1/e = {_e(1 / e_value)}), on "  # noqa: RUF001
            f"{canary[1] + stable[1]:,.0f} requests")


def chart_verdict(what: str, canary: tuple[float, float], stable: tuple[float, float],
                  log_e: float, threshold: float) -> str:
    """The chart's subtitle: what was conclusive, in one short line."""
    e_value = math.exp(min(log_e, 700.0))
    return (f"{what}: canary {_share(*canary)} vs stable {_share(*stable)}; e = {_e(e_value)} "
            f"≥ 1/α = {threshold:g}")  # noqa: RUF001


def comparison_note(note: str) -> str:
    return f"canary vs stable: {note}"


def regression_rollback(service: str, tests: Sequence[str], lines: Sequence[str]) -> str:
    return (f":rotating_light: Automatic rollback of `{service}`: the canary is worse than "
            f"stable on {' and '.join(tests)}, conclusively ({_values(lines)}). All traffic is "
            "back on stable.")


def service_wide_numbers(check: str, canary: float, stable: float, threshold: float,
                         unit: str) -> str:
    return (f"{check} canary {canary:.2f}{unit} vs stable {stable:.2f}{unit} "
            f"(SLO {threshold:g}{unit})")


def service_wide_hold(service: str, numbers: Sequence[str]) -> str:
    return (f":pause_button: Holding `{service}` — service-wide: stable is as bad "
            f"({_values(numbers)}). The canary is not blamed; meshbot will not advance while "
            "it lasts and checks go on.")


def service_wide_alert(service: str, numbers: Sequence[str]) -> str:
    return (f":rotating_light: *Alert* `{service}` — service-wide: stable is as bad as the "
            f"canary ({_values(numbers)}). The rollout holds; look at the service itself, not "
            "the canary.")


def chart_comment(service: str) -> str:
    return (f":chart_with_downwards_trend: `{service}`: canary vs stable over the step, the "
            "rollback marked.")
