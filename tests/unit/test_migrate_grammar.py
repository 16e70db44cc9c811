"""`/mesh migrate`'s grammar, and the Istio objects it writes checked against Istio's published
models (cloudcoil's, from Istio's CRD schemas; a field Istio does not know fails the round
trip)."""

from __future__ import annotations

from typing import Any

import pytest
from cloudcoil.models.istio.networking import v1beta1 as networking
from cloudcoil.models.istio.telemetry import v1 as telemetry

from bot.grammar import parse
from jobs.domain import migration_bodies as bodies
from meshbot.commands import Verb
from meshbot.errors import GrammarError
from playground.sample_mesh import destination_rule, virtual_service


def test_a_migration_and_its_controls_parse() -> None:
    command = parse("migrate production")
    assert (command.verb, command.target, command.switch, command.options) == (
        Verb.MIGRATE, "production", None, {})
    assert parse("migrate production phase=3 force=yes dry-run").options == {
        "phase": "3", "force": "yes"}
    assert parse("migrate production phase=ALL").options == {"phase": "all"}
    assert parse("migrate production dry-run").dry_run
    for action in ("pause", "resume", "abort"):
        assert parse(f"migrate production {action}").switch == action


@pytest.mark.parametrize(("text", "why"), [
    ("migrate", "needs a namespace"),
    ("migrate production phase=0", "out of range"),
    ("migrate production phase=6", "out of range"),
    ("migrate production phase=2,3", "out of range"),
    ("migrate production force=no", "the only force is force=yes"),
    ("migrate production approve", "unexpected `approve`"),  # meshbot's own, never typed
    ("migrate production abort phase=2", "unknown option `phase`"),
    ("migrate production steps=1", "unknown option `steps`"),
    ("migrate Production", "not a valid namespace name"),
])
def test_malformed_migrations_are_refused(text: str, why: str) -> None:
    with pytest.raises(GrammarError, match=why):
        parse(text)


def _round_trip(model: Any, obj: dict[str, Any]) -> None:
    parsed = model.model_validate(obj)
    assert parsed.spec.model_dump(by_alias=True, exclude_none=True, mode="json") == obj["spec"]


def test_what_the_migration_writes_is_valid_istio() -> None:
    _round_trip(telemetry.Telemetry, bodies.telemetry("production", ["prometheus"], ["jaeger"],
                                                      ["otel"]))
    _round_trip(networking.DestinationRule,
                bodies.mutual_rule("production", "networking.istio.io/v1beta1"))
    vs = virtual_service("payment-service")
    for weight in (10, 100):
        _round_trip(networking.VirtualService, {
            **vs, "spec": {**vs["spec"], "http": bodies.blue_green_http(vs["spec"]["http"],
                                                                         weight)}})
    dr = destination_rule("payment-service")
    _round_trip(networking.DestinationRule, {**dr, "spec": {**dr["spec"], "subsets":
                bodies.with_subsets(dr["spec"]["subsets"], {"blue": {"version": "v1"},
                                                            "green": {"version": "green"}})}})
