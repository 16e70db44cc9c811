"""The one decision every command passes through: grammar, then policy. Pure.

Listeners stay thin: they call ``gate`` and do what the outcome says (reply, audit, submit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.grammar import USAGE, parse
from meshbot.commands import Command, Verb
from meshbot.errors import GrammarError
from policies.decide import Allow, Deny, NeedsApproval, allowed_verbs, decide
from policies.policy import Policy
from rendering import help as help_text
from rendering import replies

if TYPE_CHECKING:  # the type only: the gate stays pure, the lookup is the caller's
    from bot.groups import UserGroups


@dataclass(frozen=True)
class Outcome:
    """What to answer the caller, and what (if anything) to hand to the workers."""

    reply: str
    command: Command | None = None
    submit: bool = False
    refusal: str | None = None
    approvals_required: int = 0
    approvers: tuple[str, ...] = ()


def policy_groups(policy: Policy) -> frozenset[str]:
    """Every Slack user-group ID the policy's roles name (membership is resolved at the edge)."""
    return frozenset(m for members in policy.roles.values() for m in members if m.startswith("S"))


def gate(policy: Policy, text: str, *, user: str, channel: str,
         user_groups: UserGroups) -> Outcome:
    """``user_groups``: the caller's groups as ``bot.groups`` read them, with those Slack could
    not be asked about (``unread``), which a refusal names."""
    try:
        command = parse(text)
    except GrammarError as exc:
        return Outcome(reply=replies.refused(exc.message), refusal=exc.message)
    if command.verb is Verb.HELP:
        verbs = allowed_verbs(policy, user=user, user_groups=user_groups, channel=channel)
        usages = {verb.value: f"/mesh {usage}" for verb, usage in USAGE.items()}
        return Outcome(reply=help_text.help_text(verbs, usages), command=command)
    if command.verb is Verb.BACKUP and command.target is None:
        # `/mesh backup` alone backs up the policy's default namespace.
        command = command.model_copy(update={"target": policy.defaults.namespace})
    decision = decide(policy, verb=command.verb.value, target=command.target, user=user,
                      user_groups=user_groups, channel=channel, percent=command.percent,
                      switch=command.switch,  # `freeze off` needs approval, `on` does not
                      dry_run=command.dry_run)
    if isinstance(decision, Deny):
        reason = decision.reason
        unread = user_groups.unread
        if unread and not isinstance(
                decide(policy, verb=command.verb.value, target=command.target, user=user,
                       user_groups=user_groups | unread, channel=channel,
                       percent=command.percent, switch=command.switch, dry_run=command.dry_run),
                Deny):
            # Refused only because Slack could not be asked whether the caller is in a group.
            reason = f"{reason} {replies.groups_unread(sorted(unread))}"
        return Outcome(reply=replies.refused(reason), command=command, refusal=reason)
    cluster, why_not = policy.cluster_for(command.verb, command.target, command.cluster)
    if why_not is not None:
        return Outcome(reply=replies.refused(why_not), command=command, refusal=why_not)
    command = command.model_copy(update={"cluster": cluster})
    if isinstance(decision, NeedsApproval):
        return Outcome(reply=replies.needs_approval(command, decision.reason), command=command,
                       submit=True, approvals_required=decision.count,
                       approvers=decision.approvers)
    assert isinstance(decision, Allow)
    return Outcome(reply=replies.accepted(command), command=command, submit=True)
