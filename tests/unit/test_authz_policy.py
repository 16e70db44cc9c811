"""`/mesh authz` in the policy: its approval count, that listing needs none, and the services'
declared callers."""

from __future__ import annotations

import pytest
import yaml

from meshbot.errors import PolicyError
from policies.decide import Allow, NeedsApproval, decide
from policies.loader import default_policy_text, load_policy_text, policy_json_schema

OPERATOR, CHANNEL = "U0OPERATOR1", "C0MESHOPS"
WEB = "cluster.local/ns/frontend/sa/web"


def policy_with(**changes: object) -> str:
    data = yaml.safe_load(default_policy_text())
    data.update(changes)
    return yaml.safe_dump(data)


def ask(text: str, switch: str, dry_run: bool = False) -> object:
    return decide(load_policy_text(text), verb="authz", target="production", user=OPERATOR,
                  user_groups=frozenset(), channel=CHANNEL, switch=switch, dry_run=dry_run)


@pytest.mark.parametrize("switch", ["deny-all", "allow", "remove"])
def test_changes_need_the_namespace_authz_count(switch: str) -> None:
    decision = ask(policy_with(namespace_approvals={"authz": 2}), switch)
    assert isinstance(decision, NeedsApproval) and decision.count == 2
    assert "AuthorizationPolicies of namespace production" in decision.reason
    default = ask(default_policy_text(), switch)
    assert isinstance(default, NeedsApproval) and default.count == 1


def test_listing_and_dry_runs_need_no_approval() -> None:
    assert ask(default_policy_text(), "list") == Allow()
    assert ask(default_policy_text(), "deny-all", dry_run=True) == Allow()


def test_callers_are_principals_or_namespaces() -> None:
    data = yaml.safe_load(default_policy_text())
    data["services"]["payment-service"]["callers"] = [WEB, "jobs"]
    policy = load_policy_text(yaml.safe_dump(data))
    assert policy.service("payment-service").callers == (WEB, "jobs")  # type: ignore[union-attr]
    assert policy.service("user-service").callers == ()  # type: ignore[union-attr]
    data["services"]["payment-service"]["callers"] = ["frontend/sa/web"]
    with pytest.raises(PolicyError, match="callers"):
        load_policy_text(yaml.safe_dump(data))


def test_the_schema_documents_both_keys() -> None:
    schema = str(policy_json_schema())
    assert "approvals to add or remove a namespace's AuthorizationPolicies" in schema
    assert "who calls this service" in schema
