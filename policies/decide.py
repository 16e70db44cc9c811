"""Pure policy decisions: may this person run this command here, and with how many approvals?

Checks run in a fixed order — channel, service, permission, approvals — so the reason a
person sees is the first thing they would have to change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from meshbot.commands import TargetKind, Verb
from meshbot.verbs import ApprovalKind, verbs_where
from meshbot.verbs import spec as verb_spec
from policies.policy import Policy
from policies.views import ServiceView

_SERVICE = TargetKind.SERVICE
SERVICE_VERBS = verbs_where(target=_SERVICE, target_optional=False)
# Their target is optional: without one they cover every service.
OPTIONAL_SERVICE_VERBS = verbs_where(target=_SERVICE, target_optional=True)
NAMESPACE_VERBS = verbs_where(target=TargetKind.NAMESPACE)
# The runbook's 90/10: the share of traffic a blue-green's start sends to the other subset.
BLUEGREEN_STEP = 10


@dataclass(frozen=True, slots=True)
class Allow:
    """Go ahead."""


@dataclass(frozen=True, slots=True)
class Deny:
    """Refused; ``reason`` is written for the person who asked."""

    reason: str


@dataclass(frozen=True, slots=True)
class NeedsApproval:
    """Allowed once ``count`` of ``approvers`` (user or user-group IDs) approve."""

    count: int
    approvers: tuple[str, ...]
    reason: str


Decision = Allow | Deny | NeedsApproval


def mention(member: str) -> str:
    """How Slack renders a user (``<@U…>``) or a user group (``<!subteam^S…>``)."""
    return f"<!subteam^{member}>" if member.startswith("S") else f"<@{member}>"


def _or_list(items: Iterable[str]) -> str:
    names = list(items)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _accepted_channels(policy: Policy, verb: Verb, view: ServiceView | None) -> list[str] | None:
    """Channels where ``verb`` is accepted; None means anywhere."""
    if not policy.channels:
        return None
    channels = list(policy.channels)
    if view is not None and view.channel:
        channels.append(view.channel)
    if verb is Verb.HELP:
        # Help is harmless and private; anyone in a service's channel may ask what they can do.
        channels.extend(s.channel for s in policy.services.values() if s.channel)
    return list(dict.fromkeys(channels))


def _channel_accepts(policy: Policy, verb: Verb, channel: str) -> bool:
    """Whether ``verb`` is accepted in ``channel`` for at least one target."""
    if not policy.channels or channel in policy.channels:
        return True
    in_service_channel = any(s.channel == channel for s in policy.services.values())
    return in_service_channel and (
        verb in SERVICE_VERBS or verb in OPTIONAL_SERVICE_VERBS or verb is Verb.HELP
    )


def _permitted(policy: Policy, verb: Verb, user: str, user_groups: frozenset[str]) -> bool:
    roles = policy.permissions.get(verb.value)
    return roles is not None and policy.in_roles(user, user_groups, roles)


def allowed_verbs(
    policy: Policy, user: str, user_groups: frozenset[str], channel: str
) -> list[str]:
    """The commands ``user`` may run in ``channel``, in the order ``/mesh help`` lists them."""
    return [
        verb.value
        for verb in Verb
        if _permitted(policy, verb, user, user_groups) and _channel_accepts(policy, verb, channel)
    ]


def is_approver(policy: Policy, user: str, user_groups: frozenset[str]) -> bool:
    """Whether ``user`` may approve (or reject) a request."""
    return policy.in_roles(user, user_groups, policy.approve)


def _you_may_run(policy: Policy, user: str, user_groups: frozenset[str], channel: str) -> str:
    verbs = allowed_verbs(policy, user, user_groups, channel)
    if not verbs:
        return "There is no /mesh command you may run here."
    return "You may run: " + ", ".join(verbs) + "."


def _approvals_needed(
    policy: Policy,
    verb: Verb,
    view: ServiceView | None,
    target: str | None,
    percent: int | None,
    switch: str | None,
) -> tuple[int, str]:
    """(count, why) for a permitted command; count 0 means no approval."""
    namespace = policy.namespace_approvals
    kind = verb_spec(verb).approval
    if view is not None:
        tier = f"tier {view.tier}"
        if verb is Verb.BLUEGREEN:  # the start; the cutover asks for its promote approvals
            count = view.approvals_for_weight(BLUEGREEN_STEP)
            return count, (f"{tier} needs approval above {view.approvals.canary_above}%, and "
                           f"a blue-green starts at {BLUEGREEN_STEP}%")
        if kind is ApprovalKind.TIER_PROMOTE:
            return view.approvals.promote, f"{view.name} is in {tier}"
        if kind is ApprovalKind.TIER_WEIGHT and percent is not None:
            count = view.approvals_for_weight(percent)
            if percent >= 100:
                return count, f"a canary at 100% is a promote in {tier}"
            return count, f"{tier} needs approval above {view.approvals.canary_above}%"
        if kind is ApprovalKind.TIER_UNLOCK:
            return view.approvals.unlock, f"breaking a lock in {tier}"
        return 0, ""
    if kind is ApprovalKind.NAMESPACE_EMERGENCY:
        # A namespace holding critical services deserves the critical tier's bar, if higher.
        tiers = policy.namespace_tiers(target or "")
        count = max([namespace.emergency, *(t.approvals.emergency for t in tiers)])
        return count, f"an emergency in namespace {target}"
    if kind is ApprovalKind.NAMESPACE_MTLS:
        return namespace.mtls, f"changing mTLS in namespace {target}"
    if kind is ApprovalKind.NAMESPACE_INJECT:
        return namespace.inject_namespace, f"changing sidecar injection in namespace {target}"
    if kind is ApprovalKind.NAMESPACE_AUTHZ and switch not in verb_spec(verb).read_only:
        return namespace.authz, f"changing the AuthorizationPolicies of namespace {target}"
    if kind is ApprovalKind.NAMESPACE_RESTORE:
        return namespace.restore, f"restoring backup {target}"
    if kind is ApprovalKind.FREEZE_OFF and switch == "off":
        return namespace.freeze_off, "lifting the change freeze"
    return 0, ""


def _target_problem(policy: Policy, verb: Verb, target: str | None, user: str) -> str | None:
    if verb in SERVICE_VERBS and not target:
        return f"<@{user}>, `/mesh {verb}` needs a service, e.g. `/mesh {verb} payment-service`."
    if (verb in NAMESPACE_VERBS or verb is Verb.RESTORE) and not target:
        what = "a backup id" if verb is Verb.RESTORE else "a namespace"
        return f"<@{user}>, `/mesh {verb}` needs {what}."
    is_service = verb in SERVICE_VERBS or verb in OPTIONAL_SERVICE_VERBS
    if is_service and target and policy.service(target) is None:
        known = ", ".join(policy.service_names) or "none"
        return f"<@{user}>: unknown service {target}; known: {known}."
    return None


def decide(
    policy: Policy,
    *,
    verb: str,
    target: str | None,
    user: str,
    user_groups: frozenset[str],
    channel: str,
    percent: int | None = None,
    switch: str | None = None,
    dry_run: bool = False,
) -> Decision:
    """Judge one command. ``switch`` is the on/off of ``freeze`` (``off`` needs approval); a
    dry run needs the verb's permission but no approval: it changes nothing."""
    try:
        command = Verb(verb)
    except ValueError:
        return Deny(f"<@{user}>, `{verb}` is not a /mesh command. Try `/mesh help`.")
    is_service = command in SERVICE_VERBS or command in OPTIONAL_SERVICE_VERBS
    view = policy.service(target) if is_service and target else None

    accepted = _accepted_channels(policy, command, view)
    if accepted is not None and channel not in accepted:
        where = ", ".join(f"<#{c}>" for c in accepted)
        return Deny(f"<@{user}>, `/mesh {verb}` is not accepted in <#{channel}>; use {where}.")

    problem = _target_problem(policy, command, target, user)
    if problem is not None:
        return Deny(problem)
    if percent is not None and not 0 <= percent <= 100:
        return Deny(f"<@{user}>, a percentage must be between 0 and 100, not {percent}.")

    if not _permitted(policy, command, user, user_groups):
        roles = policy.permissions.get(command.value)
        who = (
            f"only {_or_list(roles)} may"
            if roles
            else f"the policy lets no one run it (it has no `permissions.{verb}` entry)"
        )
        more = _you_may_run(policy, user, user_groups, channel)
        return Deny(f"<@{user}> may not run `/mesh {verb}`: {who}. {more}")

    count, why = _approvals_needed(policy, command, view, target, percent, switch)
    if count == 0 or dry_run:
        return Allow()
    # Nobody approves their own request.
    approvers = tuple(m for m in policy.members(policy.approve) if m != user)
    command_text = " ".join(p for p in (f"/mesh {verb}", target, _pct(percent)) if p)
    countable = not any(m.startswith("S") for m in approvers)
    if countable and len(approvers) < count:
        return Deny(
            f"<@{user}>, `{command_text}` needs {count} approvals ({why}) but only "
            f"{len(approvers)} people other than you may approve; ask someone else to request it."
        )
    names = ", ".join(mention(m) for m in approvers)
    plural = "approval" if count == 1 else "approvals"
    return NeedsApproval(
        count=count,
        approvers=approvers,
        reason=f"`{command_text}` needs {count} {plural} ({why}) from {names}.",
    )


def _pct(percent: int | None) -> str | None:
    return None if percent is None else str(percent)
