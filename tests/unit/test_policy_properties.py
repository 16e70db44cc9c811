"""Whatever the file holds, loading it yields a Policy or a PolicyError — never anything else."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshbot.commands import Verb
from meshbot.errors import PolicyError
from policies import Allow, Deny, NeedsApproval, Policy, allowed_verbs, decide, load_policy_text
from policies.fields import format_duration, parse_duration
from tests.unit.test_policy_model import CONTRACT_EXAMPLE

EXAMPLE: dict[str, Any] = yaml.safe_load(CONTRACT_EXAMPLE)
EXAMPLE_POLICY = load_policy_text(CONTRACT_EXAMPLE)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "30s",
            "1m",
            "hold",
            "rollback",
            "everyone",
            "operators",
            "critical",
            "U0OPERATOR1",
            "C0MESHOPS",
            "S0GROUP",
            "payment-service",
            "{fix}",
        ]
    ),
)
keys = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        sorted(
            {
                *EXAMPLE,
                *EXAMPLE["defaults"],
                "analysis",
                "slo",
                "approvals",
                "tier",
                "promote",
                "steps",
                "inject-namespace",
                "inject_namespace",
            }
        )
    ),
    st.integers(min_value=-3, max_value=3),
)
nested = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=25,
)


def outcome(text: str) -> Policy | None:
    """Load ``text``; a PolicyError is an allowed outcome, anything else fails the test."""
    try:
        return load_policy_text(text, "fuzz.yaml")
    except PolicyError as exc:
        assert exc.problems
        assert exc.message.strip()
        assert all(p.problem and p.fix for p in exc.problems)
        return None


@given(st.text(max_size=300))
def test_arbitrary_text_loads_or_raises_policy_error(text: str) -> None:
    outcome(text)


@given(st.lists(st.sampled_from(CONTRACT_EXAMPLE.splitlines()) | st.text(max_size=30), max_size=30))
def test_shuffled_lines_of_the_example_load_or_raise_policy_error(lines: list[str]) -> None:
    outcome("\n".join(lines))


@given(nested)
def test_arbitrary_documents_load_or_raise_policy_error(document: Any) -> None:
    outcome(yaml.safe_dump(document))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


EXAMPLE_PATHS = _paths(EXAMPLE)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(EXAMPLE_PATHS), nested), min_size=1, max_size=3))
def test_example_with_values_replaced_loads_or_raises_policy_error(
    replacements: list[tuple[tuple[Any, ...], Any]],
) -> None:
    document = copy.deepcopy(EXAMPLE)
    for path, value in replacements:
        node = document
        try:
            for step in path[:-1]:
                node = node[step]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier replacement removed this path
    policy = outcome(yaml.safe_dump(document))
    if policy is not None:
        for name in policy.services:
            assert policy.service(name) is not None


@given(st.floats(min_value=0.001, max_value=10**7))
def test_formatted_durations_parse_back(seconds: float) -> None:
    assert abs(parse_duration(format_duration(seconds)) - seconds) <= 1e-6


users = st.sampled_from(["U0OPERATOR1", "U0APPROVER1", "U0STRANGER"]) | st.text(max_size=8)
targets = st.none() | st.sampled_from(EXAMPLE_POLICY.service_names) | st.text(max_size=12)


@given(
    verb=st.sampled_from([v.value for v in Verb]) | st.text(max_size=10),
    target=targets,
    user=users,
    groups=st.frozensets(st.sampled_from(["S0A", "U0OPERATOR1", "U0APPROVER2"]), max_size=2),
    channel=st.sampled_from(["C0MESHOPS", "C0ELSEWHERE"]),
    percent=st.none() | st.integers(min_value=-5, max_value=105),
)
def test_decide_always_answers_and_never_gates_a_rollback(
    verb: str,
    target: str | None,
    user: str,
    groups: frozenset[str],
    channel: str,
    percent: int | None,
) -> None:
    decision = decide(
        EXAMPLE_POLICY,
        verb=verb,
        target=target,
        user=user,
        user_groups=groups,
        channel=channel,
        percent=percent,
    )
    assert isinstance(decision, Allow | Deny | NeedsApproval)
    if isinstance(decision, Deny):
        assert f"<@{user}>" in decision.reason
    if isinstance(decision, NeedsApproval):
        assert decision.count > 0
        assert user not in decision.approvers
    if verb == "rollback":
        assert not isinstance(decision, NeedsApproval)
    if verb not in allowed_verbs(EXAMPLE_POLICY, user, groups, channel):
        assert isinstance(decision, Deny)


@given(
    verb=st.sampled_from(sorted(EXAMPLE_POLICY.permissions)),
    service=st.sampled_from(EXAMPLE_POLICY.service_names),
    user=users,
)
def test_what_help_lists_is_never_refused_for_want_of_permission(
    verb: str, service: str, user: str
) -> None:
    listed = allowed_verbs(EXAMPLE_POLICY, user, frozenset(), "C0MESHOPS")
    target = "production" if verb == "emergency" else service
    decision = decide(
        EXAMPLE_POLICY,
        verb=verb,
        target=target,
        user=user,
        user_groups=frozenset(),
        channel="C0MESHOPS",
        percent=10,
    )
    assert isinstance(decision, Deny) == (verb not in listed)
