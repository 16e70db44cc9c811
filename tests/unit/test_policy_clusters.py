"""Which cluster a command means when the policy names several (``policies.clusters``), as the
gate applies it: refused with the list when ambiguous, filled in when there is one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.gate import gate
from bot.groups import UserGroups
from meshbot.errors import PolicyError
from policies.loader import load_policy_text
from policies.policy import Policy

CONTRACT_POLICY = Path(__file__).resolve().parent.parent / "data" / "contract-policy.yaml"
OPERATOR, MESHOPS = "U0OPERATOR1", "C0MESHOPS"


def policy_with(clusters: dict[str, Any] | None, **service_clusters: list[str]) -> Policy:
    data = yaml.safe_load(CONTRACT_POLICY.read_text())
    if clusters is not None:
        data["clusters"] = clusters
    for service, names in service_clusters.items():
        data["services"][service.replace("_", "-")]["clusters"] = names
    data["permissions"].update({"locks": ["operators"], "mtls": ["operators"],
                                "freeze": ["operators"]})
    return load_policy_text(yaml.safe_dump(data))


TWO = {"prod-eu": {"context": "eu"},
       "prod-us": {"context": "us", "prometheus_url": "http://prometheus.us:9090"}}


def run(policy: Policy, text: str) -> tuple[str | None, str | None]:
    """(the cluster the command goes to, the refusal)."""
    outcome = gate(policy, text, user=OPERATOR, channel=MESHOPS, user_groups=UserGroups())
    return (outcome.command.cluster if outcome.command else None), outcome.refusal


def test_without_clusters_nothing_changes_and_cluster_is_refused() -> None:
    policy = policy_with(None)
    assert run(policy, "canary payment-service 10") == (None, None)
    _, refusal = run(policy, "canary payment-service 10 cluster=prod-eu")
    assert refusal is not None and "the policy names no clusters" in refusal


def test_a_service_in_two_clusters_needs_one_named() -> None:
    policy = policy_with(TWO)
    _, refusal = run(policy, "canary payment-service 10")
    assert refusal is not None
    assert "payment-service runs in prod-eu and prod-us: add cluster=" in refusal
    assert run(policy, "canary payment-service 10 cluster=prod-us") == ("prod-us", None)


def test_a_service_in_one_cluster_goes_there() -> None:
    policy = policy_with(TWO, user_service=["prod-us"])
    assert run(policy, "canary user-service 10") == ("prod-us", None)
    _, refusal = run(policy, "canary user-service 10 cluster=prod-eu")
    assert refusal == "user-service does not run in cluster prod-eu; it runs in prod-us."


def test_a_namespace_runs_where_its_services_run() -> None:
    everyone_in_us = {name: ["prod-us"] for name in (
        "payment_service", "auth_service", "order_service", "user_service",
        "notification_service", "analytics_service", "logging_service", "metrics_collector",
        "health_checker")}
    policy = policy_with(TWO, **everyone_in_us)
    assert run(policy, "mtls production strict") == ("prod-us", None)
    _, refusal = run(policy_with(TWO), "mtls production strict")
    assert refusal is not None and "namespace production runs in prod-eu and prod-us" in refusal


def test_commands_without_a_target_name_their_cluster_and_the_freeze_is_everywhere() -> None:
    policy = policy_with(TWO)
    _, refusal = run(policy, "locks")
    assert refusal is not None and "`/mesh locks` runs in prod-eu and prod-us" in refusal
    assert run(policy, "locks cluster=prod-eu") == ("prod-eu", None)
    assert run(policy, "freeze on") == (None, None)
    _, refusal = run(policy, "freeze on cluster=prod-eu")
    assert refusal is not None and "applies to every cluster" in refusal


def test_a_refused_permission_is_said_before_the_cluster() -> None:
    outcome = gate(policy_with(TWO), "canary payment-service 10", user="U0STRANGER",
                   channel=MESHOPS, user_groups=UserGroups())
    assert outcome.refusal is not None and "may not run" in outcome.refusal


def test_policy_check_names_an_unknown_cluster_with_its_path() -> None:
    with pytest.raises(PolicyError) as raised:
        policy_with(TWO, payment_service=["prod-eux"])
    text = str(raised.value)
    assert "services.payment-service.clusters[0]" in text
    assert "did you mean `prod-eu`?" in text


def test_a_cluster_prometheus_url_must_be_a_url() -> None:
    with pytest.raises(PolicyError) as raised:
        policy_with({"prod-eu": {"prometheus_url": "prometheus:9090"}})
    assert "clusters.prod-eu.prometheus_url" in str(raised.value)
