"""Header routes, mirroring and blue-green: what their threads say.

Pure functions: facts in, Slack mrkdwn out. Every message carries its essentials in ``text``,
names people as ``<@U…>`` and writes weights as ``stable 90 / canary 10``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rendering.common import (
    _listed,
    user,
    weights,
)


def ab_root(service: str, namespace: str, requester: str, header: object | None,
            canary: str) -> str:
    if header is None:
        return (f":twisted_rightwards_arrows: *Header route off* `{service}` ({namespace}) "
                f"requested by {user(requester)}")
    return (f":twisted_rightwards_arrows: *Header route* `{service}` ({namespace}) requested by "
            f"{user(requester)}: requests with header `{header}` go to {canary}; all others "
            "follow the weights")


def ab_applied(header: object, canary: str, virtual_services: Iterable[str],
               changed: Sequence[str], before: object | None) -> str:
    was = f" (replaces `{before}`)" if before is not None and str(before) != str(header) else ""
    return (f":white_check_mark: Header route `{header}` → {canary} in place before the "
            f"weighted route on {_listed(virtual_services)}{was}; written: {_listed(changed)}. "
            "Remove it with `/mesh ab <service> off`.")


def ab_removed(header: object, changed: Sequence[str]) -> str:
    return (f":white_check_mark: Header route `{header}` removed from {_listed(changed)}: all "
            "requests follow the weights again.")


def no_header_route(service: str) -> str:
    return f"`{service}` has no header route of meshbot's to remove; nothing was changed"


def mirror_root(service: str, namespace: str, requester: str, percent: int | None,
                canary: str) -> str:
    if percent is None:
        return (f":mirror: *Mirror off* `{service}` ({namespace}) requested by "
                f"{user(requester)}")
    return (f":mirror: *Mirror* `{service}` ({namespace}) requested by {user(requester)}: a "
            f"copy of {percent}% of live requests to {canary} (its answers are discarded)")


def mirror_applied(percent: int | None, before: float | None, canary: str,
                   virtual_services: Iterable[str], changed: Sequence[str],
                   mirror_safe: bool) -> str:
    was = "nothing" if before is None else f"{before:g}%"
    if percent is None:
        return (f":white_check_mark: Mirroring off on {_listed(virtual_services)} (was {was}); "
                f"written: {_listed(changed)}.")
    note = "" if mirror_safe else " Confirmed although mirrored requests repeat their writes."
    return (f":white_check_mark: Mirroring {percent}% of live traffic to {canary} on "
            f"{_listed(virtual_services)} (was {was}); written: {_listed(changed)}.{note} "
            "Stop it with `/mesh mirror <service> off`.")


def not_mirrored(service: str) -> str:
    return f"`{service}` mirrors nothing; nothing was changed"


def mirror_zero(service: str) -> str:
    return (f"mirroring 0% sends nothing: give a percent from 1 to 100, or "
            f"`/mesh mirror {service} off` to stop mirroring")


def mirror_needs_confirmation(service: str, percent: int) -> str:
    return (f"mirroring duplicates writes: every mirrored POST/PUT/DELETE to `{service}` is "
            "executed a second time by the canary (payments charged twice, rows written twice), "
            "and the policy does not mark it `mirror_safe`. If the canary's writes go nowhere "
            f"real, confirm with `/mesh mirror {service} {percent} confirm=yes`")


def _approvals(count: int) -> str:
    return f"{count} approval{'s' if count != 1 else ''}"


def bluegreen_root(service: str, namespace: str, requester: str, header: object,
                   names: tuple[str, str], approvals: int) -> str:
    after = f"after {_approvals(approvals)}" if approvals else "at once"
    return (f":large_blue_circle: *Blue-green* `{service}` ({namespace}) requested by "
            f"{user(requester)}: preview on header `{header}` → {names[1]}, then "
            f"{weights(90, 10, *names)} under analysis, then all traffic to {names[1]} {after}")


def bluegreen_preview(header: object, green: str, virtual_services: Iterable[str]) -> str:
    return (f":eyes: Preview: requests with header `{header}` go to {green} on "
            f"{_listed(virtual_services)}.")


def _cutover_words(names: tuple[str, str], approvals: int) -> str:
    if approvals:
        return (f"meshbot asks for the cutover in this thread ({_approvals(approvals)}); once "
                f"approved, all traffic goes to {names[1]} and the preview route is removed")
    return f"all traffic goes to {names[1]} and the preview route is removed"


def bluegreen_next(service: str, names: tuple[str, str], approvals: int) -> str:
    return (f":hourglass_flowing_sand: Analysis watches {names[1]} at 10%. When it is ready, "
            f"{_cutover_words(names, approvals)}: no second command. A breach at any point "
            f"returns all traffic to {names[0]} and removes the preview route, as does "
            f"`/mesh rollback {service}`.")


def bluegreen_ready(service: str, names: tuple[str, str], approvals: int,
                    lines: Sequence[str]) -> str:
    measured = f" ({'; '.join(lines)})" if lines else ""
    if approvals:
        what = (f"the cutover to {names[1]} is asked for just below ({_approvals(approvals)}); "
                "checks go on until it runs, and a breach meanwhile still goes back to "
                f"{names[0]}")
    else:
        what = f"cutting over to {names[1]} now"
    return f":white_check_mark: `{service}` at 10% passed its analysis{measured}: {what}."


def bluegreen_steps(service: str, names: tuple[str, str], approvals: int,
                    interval_s: float) -> tuple[str, ...]:
    """What follows the writes of a blue-green's start, in words (its dry run)."""
    ask = (f"once the analysis is ready, ask {_approvals(approvals)} for the cutover in the "
           "rollout's thread" if approvals else "once the analysis is ready, cut over at once")
    return (
        f"watch {names[1]} at 10% under analysis (a check every {interval_s:g}s against "
        f"`{service}`'s SLO and against {names[0]})",
        ask,
        f"cutover: all traffic to {names[1]} ({weights(0, 100, *names)}), then the preview "
        "route removed",
        f"a breach at any point: all traffic back to {names[0]} and the preview route removed",
    )


def cutover_steps(names: tuple[str, str]) -> tuple[str, ...]:
    return (f"{names[1]} becomes the live subset: the next rollout shifts traffic from it to "
            f"{names[0]}",)


def cutover_asked_again(service: str, green: str, approvals: int,
                        asker: str | None = None) -> str:
    who = f" by {user(asker)}" if asker else ""
    if not approvals:
        return f":repeat: The cutover of `{service}` to {green} is run again{who}."
    return (f":repeat: The cutover of `{service}` to {green} is asked for again{who} "
            f"({_approvals(approvals)}), in this thread; the analysis goes on meanwhile.")


def bluegreen_ask_again(service: str) -> str:
    return (f"The blue-green of `{service}` stays at 90/10 under analysis: `/mesh bluegreen "
            f"{service}` asks for the cutover again, `/mesh rollback {service}` goes back.")


def bluegreen_busy(service: str, phase: str) -> str:
    return (f"`{service}` has a rollout {phase.replace('_', ' ')}: a blue-green starts when "
            f"none is in progress. See `/mesh status {service}`.")


def bluegreen_running(service: str, requester: str, phase: str) -> str:
    return (f"`{service}` already has a blue-green {phase.replace('_', ' ')} (started by "
            f"{user(requester)}): it asks for its cutover itself once the analysis is ready "
            f"(and again, through `/mesh bluegreen {service}`, only once a request for it was "
            f"turned down or expired). `/mesh status {service}` shows where it is; "
            f"`/mesh rollback {service}` ends it.")


def bluegreen_cutover_gone(service: str, phase: str) -> str:
    return (f"`{service}`'s blue-green is no longer waiting for its cutover "
            f"({phase.replace('_', ' ')}): nothing was changed")


def bluegreen_went_back(service: str, stable: str, cause: str) -> str:
    return f"`{service}` went back to {stable} ({cause}) before the cutover"


def bluegreen_cutover_void(reason: str, approvals: Sequence[str]) -> str:
    given = (f"the approvals of {', '.join(user(a) for a in approvals)} were not used"
             if approvals else "no approval is needed any more")
    return f":no_entry: Cutover not run: {reason}; {given}. Nothing was cut over."


def bluegreen_done(names: tuple[str, str], changed: Sequence[str]) -> str:
    return (f":large_blue_circle: Blue-green done: {names[1]} is live; preview route removed "
            f"from {_listed(changed)}. {names[0]} can be scaled down once you are sure.")
