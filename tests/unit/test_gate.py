"""bot/gate.py: the one pure decision every /mesh command passes through (grammar, then policy)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.gate import Outcome, gate, policy_groups
from bot.groups import UserGroups
from meshbot.commands import Verb
from policies.loader import load_policy_file, load_policy_text
from policies.policy import Policy

CONTRACT_POLICY = Path(__file__).resolve().parent.parent / "data" / "contract-policy.yaml"
OPERATOR, APPROVER, STRANGER = "U0OPERATOR1", "U0APPROVER1", "U0STRANGER"
APPROVERS = ("U0APPROVER1", "U0APPROVER2", "U0APPROVER3")
MESHOPS, ELSEWHERE = "C0MESHOPS", "C0RANDOM"
NO_GROUPS = UserGroups()


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy_file(CONTRACT_POLICY)


def changed(**changes: Any) -> Policy:
    data = yaml.safe_load(CONTRACT_POLICY.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return load_policy_text(yaml.safe_dump(data, sort_keys=False))


def run(policy: Policy, text: str, *, user: str = OPERATOR, channel: str = MESHOPS,
        groups: UserGroups = NO_GROUPS) -> Outcome:
    return gate(policy, text, user=user, channel=channel, user_groups=groups)


def listed_verbs(reply: str) -> set[str]:
    """The verbs a help reply lists, from its ``• `/mesh <verb> …``` lines."""
    return set(re.findall(r"^• `/mesh ([a-z-]+)", reply, flags=re.MULTILINE))


# --- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("user", "expected"), [
    (OPERATOR, {"status", "canary", "rollout", "promote", "rollback", "emergency"}),
    (APPROVER, {"status", "rollback"}),
    (STRANGER, {"status"}),  # `everyone` may ask for status
])
def test_help_lists_only_what_the_caller_may_run(policy: Policy, user: str,
                                                 expected: set[str]) -> None:
    outcome = run(policy, "help", user=user)
    assert listed_verbs(outcome.reply) == expected
    assert not outcome.submit and outcome.refusal is None


def test_help_shows_usage_for_each_listed_verb(policy: Policy) -> None:
    reply = run(policy, "help").reply
    assert "`/mesh canary <service> <percent 0-100> [dry-run]`" in reply
    assert "`/mesh rollback <service> [dry-run]`" in reply


def test_empty_text_is_help(policy: Policy) -> None:
    assert run(policy, "").reply == run(policy, "help").reply


def test_help_counts_user_group_membership(policy: Policy) -> None:
    grouped = changed(roles={"operators": ["S0MESHOPS"]})
    outcome = run(grouped, "help", user="U0NEWHIRE", groups=UserGroups({"S0MESHOPS"}))
    assert "canary" in listed_verbs(outcome.reply)
    assert "canary" not in listed_verbs(run(grouped, "help", user="U0NEWHIRE").reply)


def test_help_outside_the_allowed_channels_lists_nothing(policy: Policy) -> None:
    outcome = run(policy, "help", channel=ELSEWHERE)
    assert listed_verbs(outcome.reply) == set()
    assert "may not run any" in outcome.reply


def test_policy_groups_are_the_user_group_ids_the_roles_name() -> None:
    grouped = changed(roles={"operators": ["S0MESHOPS", "U0OPERATOR1"],
                             "approvers": ["S0ONCALL"]})
    assert policy_groups(grouped) == frozenset({"S0MESHOPS", "S0ONCALL"})


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "user", "channel", "reason"), [
    ("frobnicate payment-service", OPERATOR, MESHOPS, "unknown command `frobnicate`"),
    ("canary billing-service 10", OPERATOR, MESHOPS, "unknown service billing-service"),
    ("canary Payment_Service 10", OPERATOR, MESHOPS, "DNS-1123 label"),
    ("canary payment-service abc", OPERATOR, MESHOPS, "whole number from 0 to 100"),
    ("canary payment-service 101", OPERATOR, MESHOPS, "whole number from 0 to 100"),
    ("canary payment-service -5", OPERATOR, MESHOPS, "whole number from 0 to 100"),
    ("canary payment-service 10.5", OPERATOR, MESHOPS, "whole number from 0 to 100"),
    ("canary payment-service", OPERATOR, MESHOPS, "needs a percent"),
    ("canary", OPERATOR, MESHOPS, "needs a service"),
    ("canary payment-service 10", STRANGER, MESHOPS, "only operators may"),
    ("rollback payment-service", STRANGER, MESHOPS, "only operators or approvers may"),
    ("canary payment-service 10", OPERATOR, ELSEWHERE, f"not accepted in <#{ELSEWHERE}>"),
    ("mtls production strict", OPERATOR, MESHOPS, "no `permissions.mtls` entry"),
])
def test_refusals_say_why_and_submit_nothing(policy: Policy, text: str, user: str, channel: str,
                                             reason: str) -> None:
    outcome = run(policy, text, user=user, channel=channel)
    assert outcome.refusal is not None and reason in outcome.refusal
    assert outcome.reply.startswith(":no_entry: Refused:") and outcome.refusal in outcome.reply
    assert not outcome.submit
    assert outcome.approvals_required == 0


def test_refusal_for_a_forbidden_verb_says_what_the_caller_may_run(policy: Policy) -> None:
    refusal = run(policy, "canary payment-service 10", user=APPROVER).refusal
    assert refusal is not None and "You may run: status, rollback." in refusal


def test_the_first_thing_to_change_is_named_first(policy: Policy) -> None:
    """A stranger in the wrong channel is told about the channel (then about permission)."""
    refusal = run(policy, "canary payment-service 10", user=STRANGER, channel=ELSEWHERE).refusal
    assert refusal is not None and "not accepted in" in refusal


# --- allowed and approval-gated -----------------------------------------------------------------


def test_allowed_command_is_submitted_as_parsed(policy: Policy) -> None:
    outcome = run(policy, "canary payment-service 10")
    assert outcome.submit and outcome.refusal is None
    assert outcome.command is not None
    assert (outcome.command.verb, outcome.command.target, outcome.command.percent) == (
        Verb.CANARY, "payment-service", 10)
    assert outcome.approvals_required == 0 and outcome.approvers == ()
    assert "Accepted `/mesh canary payment-service 10`" in outcome.reply


@pytest.mark.parametrize(("text", "count"), [
    ("canary payment-service 25", 0),  # critical: canary_above 25 means strictly above
    ("canary payment-service 26", 2),
    ("canary payment-service 100", 2),  # 100 is a promote: the tier's promote count
    ("promote payment-service", 2),
    ("canary user-service 100", 1),  # core
    ("promote user-service", 1),
    ("canary logging-service 100", 0),  # pilot
    ("rollback payment-service", 0),  # a rollback never waits
])
def test_needs_approval_carries_the_count(policy: Policy, text: str, count: int) -> None:
    outcome = run(policy, text)
    assert outcome.submit and outcome.refusal is None
    assert outcome.approvals_required == count
    assert outcome.approvers == (APPROVERS if count else ())


def test_the_requester_is_never_one_of_the_approvers() -> None:
    both = changed(roles={"operators": ["U0LEAD"], "approvers": ["U0LEAD", "U0APPROVER2",
                                                                  "U0APPROVER3"]})
    outcome = run(both, "promote payment-service", user="U0LEAD")
    assert outcome.approvals_required == 2
    assert outcome.approvers == ("U0APPROVER2", "U0APPROVER3")


def test_too_few_other_approvers_is_refused() -> None:
    both = changed(roles={"operators": ["U0LEAD"], "approvers": ["U0LEAD", "U0APPROVER2"]})
    outcome = run(both, "promote payment-service", user="U0LEAD")
    assert not outcome.submit
    assert outcome.refusal is not None and "needs 2 approvals" in outcome.refusal


def test_freeze_off_needs_approval_but_freeze_on_does_not() -> None:
    """namespace_approvals.freeze_off defaults to 1: lifting a change freeze is approved."""
    with_freeze = changed(permissions={"freeze": ["operators"]})
    assert run(with_freeze, "freeze on").approvals_required == 0
    off = run(with_freeze, "freeze off")
    assert off.submit and off.approvals_required == 1
    assert off.approvers == APPROVERS


def test_a_dry_run_needs_permission_but_no_approval(policy: Policy) -> None:
    real = run(policy, "promote payment-service")
    assert real.approvals_required > 0
    planned = run(policy, "promote payment-service dry-run")
    assert planned.submit and planned.approvals_required == 0
    assert planned.command is not None and planned.command.dry_run
    assert "nothing will change" in planned.reply
    outsider = run(policy, "promote payment-service dry-run", user=STRANGER)
    assert not outsider.submit and outsider.refusal
