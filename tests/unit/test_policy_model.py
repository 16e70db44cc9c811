"""The policy file: the DESIGN.md contract example, defaults, overrides, and error reporting."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshbot.commands import Verb
from meshbot.errors import PolicyError, PolicyProblem
from policies import (
    check_policy_file,
    load_default_policy,
    load_policy_file,
    load_policy_text,
    policy_json_schema,
)
from policies.fields import format_duration, parse_duration
from policies.loader import default_policy_text

# Copied verbatim from DESIGN.md ("Policy file"): it must load and mean what it says.
CONTRACT_EXAMPLE = """\
version: 1
roles:                      # Slack user IDs (U…) or user-group IDs (S…)
  operators: [U0OPERATOR1, U0OPERATOR2]
  approvers: [U0APPROVER1, U0APPROVER2, U0APPROVER3]
channels: [C0MESHOPS]       # commands are accepted only in these channels (empty: anywhere)
defaults:
  namespace: production
  subsets: {stable: stable, canary: canary}
  analysis: {interval: 30s, failure_threshold: 3, steps: [5, 10, 25, 50], no_data: hold}
  slo: {success_rate: 99.9, latency_p99_ms: 100, min_request_rate: 1.0}
tiers:
  pilot:    {approvals: {promote: 0, emergency: 2}}
  core:     {approvals: {promote: 1, emergency: 2}}
  critical: {approvals: {promote: 2, canary_above: 25, emergency: 2}}
permissions:                # who may ask; approvals are separate
  status: [everyone]
  canary: [operators]
  rollout: [operators]
  promote: [operators]
  rollback: [operators, approvers]
  emergency: [operators]
approve: [approvers]
services:                   # per-service overrides: namespace, virtual_service, subsets, slo,
  payment-service: {tier: critical}       # analysis, channel
  auth-service: {tier: critical}
  order-service: {tier: critical}
  user-service: {tier: core}
  notification-service: {tier: core}
  analytics-service: {tier: core}
  logging-service: {tier: pilot}
  metrics-collector: {tier: pilot}
  health-checker: {tier: pilot}
"""

TIERS = {
    "pilot": ("logging-service", "metrics-collector", "health-checker"),
    "core": ("user-service", "notification-service", "analytics-service"),
    "critical": ("payment-service", "auth-service", "order-service"),
}


def example_dict() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CONTRACT_EXAMPLE)
    return data


def dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def problems_of(data: dict[str, Any] | str) -> list[PolicyProblem]:
    text = data if isinstance(data, str) else dump(data)
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "test.yaml")
    assert caught.value.problems, "a PolicyError must list its problems"
    assert "test.yaml" in caught.value.message
    return caught.value.problems


def only_problem(data: dict[str, Any] | str) -> PolicyProblem:
    problems = problems_of(data)
    assert len(problems) == 1, problems
    return problems[0]


def test_contract_example_loads_with_its_values() -> None:
    policy = load_policy_text(CONTRACT_EXAMPLE)
    assert policy.roles["approvers"] == ["U0APPROVER1", "U0APPROVER2", "U0APPROVER3"]
    assert policy.channels == ["C0MESHOPS"]
    assert policy.approve == ["approvers"]
    assert policy.tiers["critical"].approvals.canary_above == 25
    assert policy.tiers["core"].approvals.canary_above is None
    assert policy.permissions["rollback"] == ["operators", "approvers"]
    analysis = policy.defaults.analysis
    assert (analysis.interval, analysis.failure_threshold) == (30.0, 3)
    assert (analysis.steps, analysis.no_data) == ([5, 10, 25, 50], "hold")


def test_contract_example_gets_the_documented_defaults() -> None:
    policy = load_policy_text(CONTRACT_EXAMPLE)
    assert policy.defaults.analysis.deadline == 600.0
    assert policy.defaults.analysis.version_label == "version"
    slo = policy.defaults.slo
    assert (slo.latency_p95_ms, slo.availability) == (None, 99.9)
    assert (slo.burn_rate.factor, slo.burn_rate.windows) == (14.4, [300.0, 3600.0])
    assert policy.approvals.approve_emoji == "white_check_mark"
    assert policy.approvals.reject_emoji == "x"
    assert policy.approvals.ttl == 1800.0
    counts = policy.namespace_approvals
    assert (counts.mtls, counts.inject_namespace, counts.restore) == (1, 1, 2)
    assert (counts.emergency, counts.freeze_off) == (2, 1)
    assert policy.gitops_allowed is False


@pytest.mark.parametrize(
    ("tier", "service"), [(tier, name) for tier, names in TIERS.items() for name in names]
)
def test_each_service_resolves_with_its_tier(tier: str, service: str) -> None:
    view = load_policy_text(CONTRACT_EXAMPLE).service(service)
    assert view is not None
    assert view.tier == tier
    assert view.namespace == "production"
    assert view.virtual_services == (service,)
    assert (view.subsets.stable, view.subsets.canary) == ("stable", "canary")
    assert view.slo.success_rate == 99.9
    assert view.channel is None
    assert (view.mirror_safe, view.gitops_allowed) == (False, False)


def test_unknown_service_has_no_view() -> None:
    policy = load_policy_text(CONTRACT_EXAMPLE)
    assert policy.service("payments") is None
    assert len(policy.service_names) == 9


def test_service_overrides_merge_over_defaults() -> None:
    data = example_dict()
    data["services"]["payment-service"] = {
        "tier": "critical",
        "namespace": "payments",
        "virtual_services": ["payment-service", "istio-system/payment-gateway"],
        "subsets": {"canary": "green"},
        "channel": "C0PAYMENTS",
        "slo": {"latency_p99_ms": 250, "burn_rate": {"factor": 6}},
        "analysis": {"steps": [1, 2, 5], "interval": "1m"},
        "mirror_safe": True,
        "gitops_allowed": True,
    }
    view = load_policy_text(dump(data)).service("payment-service")
    assert view is not None
    assert view.namespace == "payments"
    assert view.virtual_services == ("payment-service", "istio-system/payment-gateway")
    assert (view.subsets.stable, view.subsets.canary) == ("stable", "green")
    assert view.channel == "C0PAYMENTS"
    assert (view.slo.latency_p99_ms, view.slo.success_rate) == (250.0, 99.9)
    assert (view.slo.burn_rate.factor, view.slo.burn_rate.windows) == (6.0, [300.0, 3600.0])
    assert (view.analysis.steps, view.analysis.interval) == ([1, 2, 5], 60.0)
    assert (view.analysis.failure_threshold, view.analysis.no_data) == (3, "hold")
    assert (view.mirror_safe, view.gitops_allowed) == (True, True)


def test_service_inherits_top_level_gitops_allowed_unless_it_overrides() -> None:
    data = example_dict()
    data["gitops_allowed"] = True
    data["services"]["auth-service"]["gitops_allowed"] = False
    policy = load_policy_text(dump(data))
    assert policy.service("payment-service").gitops_allowed is True  # type: ignore[union-attr]
    assert policy.service("auth-service").gitops_allowed is False  # type: ignore[union-attr]


def test_approvals_for_weight_follows_canary_above() -> None:
    policy = load_policy_text(CONTRACT_EXAMPLE)
    critical, core = policy.service("payment-service"), policy.service("user-service")
    assert critical is not None and core is not None
    assert [critical.approvals_for_weight(w) for w in (10, 25, 26, 50, 100)] == [0, 0, 2, 2, 2]
    assert [core.approvals_for_weight(w) for w in (10, 50, 99, 100)] == [0, 0, 0, 1]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("1m", 60.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1.5s", 1.5),
        (45, 45.0),
    ],
)
def test_durations_parse_to_seconds(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["30", "1 min", "-5s", "0s", "", "s", True, None, "1e3s"])
def test_bad_durations_name_the_key_and_say_how_to_write_one(bad: object) -> None:
    data = example_dict()
    data["defaults"]["analysis"]["interval"] = bad
    problem = only_problem(data)
    assert problem.path == "defaults.analysis.interval"
    assert '"30s"' in problem.fix


def test_format_duration_reads_back() -> None:
    for seconds in (0.25, 1.0, 30.0, 90.0, 600.0, 3600.0, 86400.0):
        assert parse_duration(format_duration(seconds)) == seconds


def test_unknown_service_tier_names_the_path_and_the_defined_tiers() -> None:
    data = example_dict()
    data["services"]["payment-service"]["tier"] = "critcal"
    problem = only_problem(data)
    assert problem.path == "services.payment-service.tier"
    assert "critcal" in problem.problem
    assert "did you mean `critical`" in problem.fix
    assert "pilot, core, critical" in problem.fix


def test_unknown_key_suggests_the_close_one() -> None:
    data = example_dict()
    data["services"]["payment-service"]["virtual_service"] = "payments"
    problem = only_problem(data)
    assert problem.path == "services.payment-service.virtual_service"
    assert "unknown key" in problem.problem
    assert "did you mean `virtual_services`" in problem.fix


def test_unknown_top_level_key_is_an_error() -> None:
    data = example_dict()
    data["permission"] = {}
    problem = only_problem(data)
    assert problem.path == "permission"
    assert "`permissions`" in problem.fix


def test_missing_required_key_says_what_to_add() -> None:
    data = example_dict()
    del data["defaults"]["slo"]["latency_p99_ms"]
    problem = only_problem(data)
    assert problem.path == "defaults.slo.latency_p99_ms"
    assert problem.fix.startswith("add `latency_p99_ms`")


def test_permissions_must_name_defined_roles() -> None:
    data = example_dict()
    data["permissions"]["promote"] = ["operators", "oncall"]
    problem = only_problem(data)
    assert problem.path == "permissions.promote[1]"
    assert "oncall" in problem.problem
    assert "operators, approvers, everyone" in problem.fix


def test_approve_must_name_defined_roles_and_not_everyone() -> None:
    data = example_dict()
    data["approve"] = ["approvers", "everyone", "leads"]
    problems = problems_of(data)
    assert [p.path for p in problems] == ["approve[1]", "approve[2]"]


def test_permission_keys_must_be_mesh_commands() -> None:
    data = example_dict()
    data["permissions"]["deploy"] = ["operators"]
    problem = only_problem(data)
    assert problem.path == "permissions.deploy"
    assert "inject-namespace" in problem.fix


def test_inject_namespace_permission_is_spelt_as_the_command() -> None:
    data = example_dict()
    data["permissions"]["inject_namespace"] = ["operators"]
    assert only_problem(data).fix.startswith("write `inject-namespace`")
    data["permissions"]["inject-namespace"] = data["permissions"].pop("inject_namespace")
    assert "inject-namespace" in load_policy_text(dump(data)).permissions
    assert Verb.INJECT_NAMESPACE.value == "inject-namespace"


@pytest.mark.parametrize(
    ("steps", "path"),
    [
        ([5, 5, 10], "defaults.analysis.steps"),
        ([10, 5], "defaults.analysis.steps"),
        ([0, 5], "defaults.analysis.steps[0]"),
        ([5, 100], "defaults.analysis.steps[1]"),
        ([], "defaults.analysis.steps"),
    ],
)
def test_steps_strictly_increase_within_1_to_99(steps: list[int], path: str) -> None:
    data = example_dict()
    data["defaults"]["analysis"]["steps"] = steps
    assert only_problem(data).path == path


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("defaults", "slo", "success_rate"), 100.1),
        (("defaults", "slo", "success_rate"), -1),
        (("tiers", "critical", "approvals", "canary_above"), 101),
        (("defaults", "slo", "availability"), 100),
    ],
)
def test_percentages_stay_within_0_to_100(where: tuple[str, ...], value: float) -> None:
    data = example_dict()
    node = data
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    assert only_problem(data).path == ".".join(where)


@pytest.mark.parametrize("name", ["Payment-Service", "payment_service", "-payment", "a" * 64])
def test_service_names_are_dns_labels(name: str) -> None:
    data = example_dict()
    data["services"][name] = {"tier": "core"}
    problem = only_problem(data)
    assert problem.path == f"services.{name}"
    assert "DNS-1123" in problem.problem


@pytest.mark.parametrize(
    ("where", "value", "path"),
    [
        (("roles", "operators"), ["@alice"], "roles.operators[0]"),
        (("channels",), ["#mesh-ops"], "channels[0]"),
        (("services", "auth-service", "channel"), "mesh", "services.auth-service.channel"),
    ],
)
def test_slack_ids_are_checked(where: tuple[str, ...], value: Any, path: str) -> None:
    data = example_dict()
    node = data
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    problem = only_problem(data)
    assert problem.path == path
    assert "ID" in problem.fix


def test_user_and_group_ids_are_accepted_as_role_members() -> None:
    data = example_dict()
    data["roles"]["operators"] = ["U0OPERATOR1", "W0GRIDUSER", "S0SREGROUP"]
    assert load_policy_text(dump(data)).roles["operators"][2] == "S0SREGROUP"


def test_conflicting_subset_override_is_reported_at_the_service() -> None:
    data = example_dict()
    data["services"]["order-service"]["subsets"] = {"canary": "stable"}
    problem = only_problem(data)
    assert problem.path == "services.order-service.subsets"
    assert "different subset" in problem.fix


def test_required_approvals_nobody_can_give_are_an_error() -> None:
    data = example_dict()
    data["roles"]["approvers"] = ["U0APPROVER1"]
    problems = problems_of(data)
    assert "tiers.critical.approvals.promote" in [p.path for p in problems]
    data["approve"] = []
    assert "approve" in problems_of(data)[0].problem


def test_many_problems_are_reported_together() -> None:
    data = example_dict()
    data["version"] = 2
    data["channels"] = ["general"]
    data["defaults"]["analysis"]["no_data"] = "ignore"
    paths = {p.path for p in problems_of(data)}
    assert paths == {"version", "channels[0]", "defaults.analysis.no_data"}


def test_yaml_syntax_error_gives_the_line() -> None:
    text = CONTRACT_EXAMPLE.replace("approve: [approvers]", "approve: [approvers")
    problem = only_problem(text)
    assert problem.path == ""
    # The parser notices the unclosed bracket where the next key starts.
    assert "line 23" in problem.problem
    assert "YAML" in problem.problem


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a list\n", "just text\n"])
def test_a_document_that_is_not_a_mapping_is_refused(text: str) -> None:
    assert only_problem(text).path == ""


def test_policy_error_message_lists_path_and_fix() -> None:
    data = example_dict()
    data["services"]["payment-service"]["tier"] = "gold"
    with pytest.raises(PolicyError) as caught:
        load_policy_text(dump(data), "prod.yaml")
    assert "prod.yaml is invalid" in caught.value.message
    assert "services.payment-service.tier: tier `gold` is not defined — use one of" in (
        caught.value.message
    )


def test_files_load_and_check(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(CONTRACT_EXAMPLE, encoding="utf-8")
    bad.write_text(CONTRACT_EXAMPLE.replace("tier: pilot}", "tier: gold}"), encoding="utf-8")
    assert load_policy_file(good).service("health-checker") is not None
    assert check_policy_file(good) == []
    paths = [p.path for p in check_policy_file(bad)]
    assert paths == [f"services.{name}.tier" for name in TIERS["pilot"]]


def test_missing_file_is_a_policy_problem(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    [problem] = check_policy_file(missing)
    assert "does not exist" in problem.problem
    assert "MESHBOT_POLICY" in problem.fix
    with pytest.raises(PolicyError):
        load_policy_file(missing)
    [problem] = check_policy_file(tmp_path)
    assert "directory" in problem.problem


def test_packaged_default_policy_loads() -> None:
    policy = load_default_policy()
    for tier, names in TIERS.items():
        assert all(policy.service(n).tier == tier for n in names)  # type: ignore[union-attr]
    assert set(policy.service_names) == {n for names in TIERS.values() for n in names}
    assert policy.permissions["status"] == ["everyone"]
    assert policy.permissions["canary"] == ["operators"]
    assert set(policy.permissions) == {verb.value for verb in Verb}


def test_default_policy_keeps_the_contract_examples_meaning() -> None:
    default = yaml.safe_load(default_policy_text())
    example = example_dict()
    for key in ("version", "roles", "channels", "tiers", "approve", "services"):
        assert default[key] == example[key], key
    for verb, roles in example["permissions"].items():
        assert default["permissions"][verb] == roles, verb


def _schema_nodes_without_description(node: Any, path: str, defs: dict[str, Any]) -> list[str]:
    missing: list[str] = []
    for name, prop in node.get("properties", {}).items():
        here = f"{path}.{name}" if path else name
        if "description" not in prop:
            missing.append(here)
        ref = prop.get("$ref") or next(
            (alt["$ref"] for alt in prop.get("anyOf", []) if "$ref" in alt), None
        )
        patterned = list(prop.get("patternProperties", {}).values())
        target = (
            prop.get("additionalProperties") or prop.get("items") or next(iter(patterned), None)
        )
        if ref is None and isinstance(target, dict):
            ref = target.get("$ref")
        if ref is not None:
            sub = defs[ref.split("/")[-1]]
            missing += _schema_nodes_without_description(sub, here, defs)
    return missing


def test_json_schema_describes_every_key_and_documents_defaults() -> None:
    schema = policy_json_schema()
    assert schema["additionalProperties"] is False
    assert _schema_nodes_without_description(schema, "", schema["$defs"]) == []
    analysis = schema["$defs"]["Analysis"]["properties"]
    assert analysis["deadline"]["default"] == "10m"
    assert analysis["version_label"]["default"] == "version"
    assert schema["$defs"]["NamespaceApprovals"]["properties"]["restore"]["default"] == 2
    assert schema["$defs"]["Approvals"]["properties"]["ttl"]["default"] == "30m"
    assert set(schema["required"]) == {"version", "defaults"}
    [role] = schema["properties"]["roles"]["patternProperties"].values()
    member = role["items"]["pattern"]
    assert re.fullmatch(member, "U0OPERATOR1") and not re.fullmatch(member, "@alice")


def test_a_loaded_policy_dumps_to_a_document_that_loads_back_equal() -> None:
    policy = load_policy_text(CONTRACT_EXAMPLE)
    again = load_policy_text(yaml.safe_dump(policy.model_dump(mode="json"), sort_keys=False))
    assert again == policy
    assert again.service("payment-service") == policy.service("payment-service")


def test_everyone_cannot_be_a_role_name() -> None:
    data = example_dict()
    data["roles"]["everyone"] = ["U0SOMEONE"]
    assert only_problem(data).path == "roles.everyone"


def test_approve_and_reject_emoji_must_differ() -> None:
    data = example_dict()
    data["approvals"] = {"approve_emoji": "ok", "reject_emoji": "ok"}
    problem = only_problem(data)
    assert problem.path == "approvals"
    assert "reject_emoji" in problem.fix


def test_emoji_names_are_written_without_colons() -> None:
    data = example_dict()
    data["approvals"] = {"approve_emoji": ":white_check_mark:"}
    assert "without colons" in only_problem(data).fix


def test_a_file_that_is_not_utf8_is_a_policy_problem(tmp_path: Path) -> None:
    binary = tmp_path / "policy.yaml"
    binary.write_bytes(b"version: 1\n\xff\xfe\n")
    [problem] = check_policy_file(binary)
    assert "UTF-8" in problem.problem
