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


def bluegreen_root(service: str, namespace: str, requester: str, header: object,
                   names: tuple[str, str], approvals: int) -> str:
    after = (f"after {approvals} approval{'s' if approvals != 1 else ''}" if approvals
             else "on request")
    return (f":large_blue_circle: *Blue-green* `{service}` ({namespace}) requested by "
            f"{user(requester)}: preview on header `{header}` → {names[1]}, then "
            f"{weights(90, 10, *names)} under analysis, then all traffic to {names[1]} {after}")


def bluegreen_preview(header: object, green: str, virtual_services: Iterable[str]) -> str:
    return (f":eyes: Preview: requests with header `{header}` go to {green} on "
            f"{_listed(virtual_services)}.")


def bluegreen_next(service: str, names: tuple[str, str], approvals: int) -> str:
    gate = (f" (needs {approvals} approval{'s' if approvals != 1 else ''})" if approvals
            else "")
    return (f":hourglass_flowing_sand: Analysis watches {names[1]} at 10%. When it passes, "
            f"`/mesh bluegreen {service}` again switches all traffic to {names[1]} and removes "
            f"the preview route{gate}. `/mesh rollback {service}` returns the weighted traffic to "
            f"{names[0]}; the preview route stays until `/mesh ab {service} off`.")


def bluegreen_busy(service: str, phase: str) -> str:
    return (f"`{service}` has a rollout {phase.replace('_', ' ')}: a blue-green cutover starts "
            f"when none is in progress and switches once analysis passed (ready to promote). "
            f"See `/mesh status {service}`.")


def bluegreen_done(names: tuple[str, str], changed: Sequence[str]) -> str:
    return (f":large_blue_circle: Blue-green done: {names[1]} is live; preview route removed "
            f"from {_listed(changed)}. {names[0]} can be scaled down once you are sure.")
