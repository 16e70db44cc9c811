"""Policy decisions on the DESIGN.md contract example: who may run what, where, with approvals."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from policies import (
    Allow,
    Decision,
    Deny,
    NeedsApproval,
    Policy,
    allowed_verbs,
    decide,
    is_approver,
    load_default_policy,
    load_policy_text,
)
from tests.unit.test_policy_model import CONTRACT_EXAMPLE

OPERATOR, OPERATOR2 = "U0OPERATOR1", "U0OPERATOR2"
APPROVER = "U0APPROVER1"
APPROVERS = ("U0APPROVER1", "U0APPROVER2", "U0APPROVER3")
STRANGER = "U0STRANGER"
MESHOPS, ELSEWHERE = "C0MESHOPS", "C0RANDOM"
NO_GROUPS: frozenset[str] = frozenset()


@pytest.fixture(scope="module")
def example() -> Policy:
    return load_policy_text(CONTRACT_EXAMPLE)


def with_changes(**changes: Any) -> Policy:
    data = yaml.safe_load(CONTRACT_EXAMPLE)
    data.update(changes)
    return load_policy_text(yaml.safe_dump(data, sort_keys=False))


def ask(
    policy: Policy,
    verb: str,
    target: str | None = None,
    *,
    user: str = OPERATOR,
    groups: frozenset[str] = NO_GROUPS,
    channel: str = MESHOPS,
    percent: int | None = None,
    switch: str | None = None,
) -> Decision:
    return decide(
        policy,
        verb=verb,
        target=target,
        user=user,
        user_groups=groups,
        channel=channel,
        percent=percent,
        switch=switch,
    )


def denial(decision: Decision) -> str:
    assert isinstance(decision, Deny), decision
    return decision.reason


def approval(decision: Decision) -> NeedsApproval:
    assert isinstance(decision, NeedsApproval), decision
    return decision


def test_operator_may_canary_a_pilot_service(example: Policy) -> None:
    assert ask(example, "canary", "logging-service", percent=10) == Allow()


def test_commands_outside_the_listed_channels_are_refused(example: Policy) -> None:
    reason = denial(ask(example, "canary", "logging-service", percent=10, channel=ELSEWHERE))
    assert f"<@{OPERATOR}>" in reason
    assert "/mesh canary" in reason
    assert f"<#{ELSEWHERE}>" in reason and f"<#{MESHOPS}>" in reason


def test_channel_is_checked_before_anything_else(example: Policy) -> None:
    reason = denial(ask(example, "promote", "no-such-service", user=STRANGER, channel=ELSEWHERE))
    assert "not accepted" in reason


def test_empty_channel_list_accepts_commands_anywhere() -> None:
    policy = with_changes(channels=[])
    assert ask(policy, "rollback", "user-service", channel=ELSEWHERE) == Allow()


def test_service_channel_accepts_that_services_commands_only() -> None:
    data = yaml.safe_load(CONTRACT_EXAMPLE)
    data["services"]["payment-service"]["channel"] = "C0PAYMENTS"
    policy = load_policy_text(yaml.safe_dump(data))
    assert ask(policy, "rollback", "payment-service", channel="C0PAYMENTS") == Allow()
    assert isinstance(ask(policy, "rollback", "auth-service", channel="C0PAYMENTS"), Deny)
    assert isinstance(ask(policy, "emergency", "production", channel="C0PAYMENTS"), Deny)
    assert ask(policy, "rollback", "auth-service", channel=MESHOPS) == Allow()


def test_unknown_service_is_refused_with_the_known_ones(example: Policy) -> None:
    reason = denial(ask(example, "canary", "payments", percent=10))
    assert "unknown service payments; known: analytics-service, auth-service" in reason
    assert "health-checker" in reason


def test_unknown_service_is_refused_even_for_everyone_verbs(example: Policy) -> None:
    assert "unknown service" in denial(ask(example, "status", "payments", user=STRANGER))
    assert ask(example, "status", None, user=STRANGER) == Allow()


def test_service_verb_without_a_service_is_refused(example: Policy) -> None:
    assert "needs a service" in denial(ask(example, "promote", None))


def test_unknown_verb_is_refused(example: Policy) -> None:
    assert "not a /mesh command" in denial(ask(example, "deploy", "user-service"))


def test_permission_names_the_user_the_verb_and_who_may(example: Policy) -> None:
    reason = denial(ask(example, "canary", "user-service", user=APPROVER, percent=5))
    assert reason.startswith(f"<@{APPROVER}> may not run `/mesh canary`")
    assert "only operators may" in reason
    assert "You may run: status, rollback." in reason


def test_rollback_is_allowed_to_operators_and_approvers(example: Policy) -> None:
    assert ask(example, "rollback", "payment-service", user=OPERATOR) == Allow()
    assert ask(example, "rollback", "payment-service", user=APPROVER) == Allow()
    assert "operators or approvers" in denial(
        ask(example, "rollback", "payment-service", user=STRANGER)
    )


def test_everyone_keyword_lets_anyone_ask_status(example: Policy) -> None:
    assert ask(example, "status", "payment-service", user=STRANGER) == Allow()


@pytest.mark.parametrize("verb", ["mirror", "restore", "help", "freeze", "locks"])
def test_verbs_missing_from_permissions_are_denied_to_everyone(example: Policy, verb: str) -> None:
    target = {"mirror": "user-service", "restore": "backup-1"}.get(verb)
    reason = denial(ask(example, verb, target, user=OPERATOR))
    assert f"no `permissions.{verb}` entry" in reason


def test_user_group_membership_counts_as_the_role() -> None:
    roles = {"operators": ["S0SREGROUP"], "approvers": list(APPROVERS)}
    policy = with_changes(roles=roles)
    sre = frozenset({"S0SREGROUP"})
    assert ask(policy, "rollout", "user-service", user="U0NEWHIRE", groups=sre) == Allow()
    assert isinstance(ask(policy, "rollout", "user-service", user="U0NEWHIRE"), Deny)


@pytest.mark.parametrize(
    ("service", "count"),
    [("logging-service", 0), ("user-service", 1), ("payment-service", 2), ("order-service", 2)],
)
def test_promote_needs_the_tiers_approvals(example: Policy, service: str, count: int) -> None:
    decision = ask(example, "promote", service)
    if count == 0:
        assert decision == Allow()
    else:
        needed = approval(decision)
        assert needed.count == count
        assert needed.approvers == APPROVERS
        assert f"/mesh promote {service}" in needed.reason
        assert "<@U0APPROVER2>" in needed.reason


@pytest.mark.parametrize(
    ("percent", "count"), [(5, 0), (25, 0), (26, 2), (50, 2), (99, 2), (100, 2)]
)
def test_critical_canary_above_25_needs_the_promote_approvals(
    example: Policy, percent: int, count: int
) -> None:
    decision = ask(example, "canary", "payment-service", percent=percent)
    assert decision == Allow() if count == 0 else approval(decision).count == count


@pytest.mark.parametrize(("service", "count"), [("user-service", 1), ("health-checker", 0)])
def test_canary_at_100_is_a_promote(example: Policy, service: str, count: int) -> None:
    assert ask(example, "canary", service, percent=99) == Allow()
    decision = ask(example, "canary", service, percent=100)
    assert decision == Allow() if count == 0 else approval(decision).count == count


def test_rollout_is_allowed_at_start_even_in_critical(example: Policy) -> None:
    assert ask(example, "rollout", "payment-service") == Allow()


def test_out_of_range_percent_is_refused(example: Policy) -> None:
    assert "between 0 and 100" in denial(ask(example, "canary", "user-service", percent=101))


def test_emergency_uses_namespace_approvals(example: Policy) -> None:
    needed = approval(ask(example, "emergency", "production"))
    assert needed.count == 2
    assert "namespace production" in needed.reason


def test_emergency_takes_the_higher_of_namespace_and_tier_counts() -> None:
    data = yaml.safe_load(CONTRACT_EXAMPLE)
    data["tiers"]["critical"]["approvals"]["emergency"] = 3
    data["namespace_approvals"] = {"emergency": 1}
    policy = load_policy_text(yaml.safe_dump(data))
    assert approval(ask(policy, "emergency", "production")).count == 3
    assert approval(ask(policy, "emergency", "staging")).count == 1


def test_namespace_actions_use_namespace_approvals() -> None:
    permissions = {v: ["operators"] for v in ("mtls", "inject-namespace", "restore", "freeze")}
    policy = with_changes(
        permissions=permissions,
        namespace_approvals={"mtls": 1, "inject_namespace": 2, "restore": 3, "freeze_off": 1},
    )
    assert approval(ask(policy, "mtls", "production")).count == 1
    assert approval(ask(policy, "inject-namespace", "production")).count == 2
    assert approval(ask(policy, "restore", "backup-20240101")).count == 3
    assert approval(ask(policy, "freeze", switch="off")).count == 1
    assert ask(policy, "freeze", switch="on") == Allow()


def test_rollback_never_needs_approval(example: Policy) -> None:
    for service in ("payment-service", "user-service", "logging-service"):
        assert ask(example, "rollback", service) == Allow()


def test_requester_is_not_their_own_approver() -> None:
    roles = {"operators": [OPERATOR, APPROVER], "approvers": list(APPROVERS)}
    policy = with_changes(roles=roles)
    needed = approval(ask(policy, "promote", "payment-service", user=APPROVER))
    assert APPROVER not in needed.approvers
    assert needed.count == 2


def test_request_that_too_few_others_could_approve_is_refused() -> None:
    roles = {"operators": [OPERATOR, APPROVER], "approvers": ["U0APPROVER1", "U0APPROVER2"]}
    policy = with_changes(roles=roles)
    assert isinstance(ask(policy, "promote", "payment-service", user=OPERATOR), NeedsApproval)
    reason = denial(ask(policy, "promote", "payment-service", user=APPROVER))
    assert "only 1 people other than you" in reason


def test_group_approvers_are_named_as_subteams() -> None:
    policy = with_changes(roles={"operators": [OPERATOR], "approvers": ["S0ONCALL"]})
    needed = approval(ask(policy, "promote", "order-service"))
    assert needed.approvers == ("S0ONCALL",)
    assert "<!subteam^S0ONCALL>" in needed.reason


def test_is_approver_by_id_or_group() -> None:
    policy = with_changes(roles={"operators": [OPERATOR], "approvers": ["U0LEAD", "S0ONCALL"]})
    assert is_approver(policy, "U0LEAD", NO_GROUPS)
    assert is_approver(policy, "U0SOMEONE", frozenset({"S0ONCALL"}))
    assert not is_approver(policy, OPERATOR, frozenset({"S0OTHER"}))


def test_allowed_verbs_lists_only_what_the_caller_may_run(example: Policy) -> None:
    assert allowed_verbs(example, STRANGER, NO_GROUPS, MESHOPS) == ["status"]
    assert allowed_verbs(example, APPROVER, NO_GROUPS, MESHOPS) == ["status", "rollback"]
    assert allowed_verbs(example, OPERATOR2, NO_GROUPS, MESHOPS) == [
        "status",
        "canary",
        "rollout",
        "promote",
        "rollback",
        "emergency",
    ]
    assert allowed_verbs(example, OPERATOR, NO_GROUPS, ELSEWHERE) == []


def test_default_policy_lets_everyone_read_and_operators_act() -> None:
    policy = load_default_policy()
    for verb in ("help", "status", "audit", "locks", "backups", "readiness"):
        target = "payment-service" if verb in ("status", "audit") else None
        assert ask(policy, verb, target, user=STRANGER) == Allow(), verb
    assert isinstance(ask(policy, "pause", "payment-service", user=STRANGER), Deny)
    assert ask(policy, "pause", "payment-service") == Allow()
    assert approval(ask(policy, "unlock", "payment-service")).count == 1
    # A blue-green's start is a canary at 10% (its cutover asks for the promote approvals).
    assert ask(policy, "bluegreen", "auth-service") == Allow()
    assert "help" in allowed_verbs(policy, STRANGER, NO_GROUPS, MESHOPS)
