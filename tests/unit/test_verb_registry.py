"""The verb registry is the one declaration of each verb: every table the layers use is read
from it, and every handler it names exists."""

from __future__ import annotations

import pytest

from bot.grammar import USAGE, parse, target_kind
from jobs.runtime import api, gates, tasks
from meshbot.commands import TargetKind, Verb
from meshbot.verbs import REGISTRY, VERBS
from policies.decide import NAMESPACE_VERBS, OPTIONAL_SERVICE_VERBS


def test_every_verb_is_declared_once() -> None:
    assert [s.verb for s in REGISTRY] == list(Verb)
    assert len({s.verb for s in REGISTRY}) == len(REGISTRY)


@pytest.mark.parametrize("spec", REGISTRY, ids=lambda s: s.verb.value)
def test_the_declared_handler_is_the_one_the_worker_runs(spec: object) -> None:
    from meshbot.verbs import VerbSpec

    assert isinstance(spec, VerbSpec)
    if spec.handler is None:
        assert spec.verb not in tasks.HANDLERS  # the bot answers it itself (help)
        return
    module, _, name = spec.handler.partition(":")
    handler = tasks.HANDLERS[spec.verb]
    assert (handler.__module__, handler.__name__) == (module, name)


def test_usage_and_target_kind_come_from_the_registry() -> None:
    for spec in REGISTRY:
        assert USAGE[spec.verb] == spec.full_usage
        assert target_kind(spec.verb) is spec.target
        assert spec.usage.split()[0] == spec.verb.value


def test_the_gates_queue_and_policy_read_the_registry() -> None:
    assert {Verb.ROLLBACK, Verb.ABORT} == gates.ALWAYS_ALLOWED
    assert {Verb.ROLLBACK, Verb.ABORT, Verb.EMERGENCY} == api.URGENT_VERBS
    assert gates.LOCKING <= gates.CHANGES
    assert {Verb.EMERGENCY} == gates.CHANGES - gates.FROZEN
    assert Verb.CANARY in gates.LOCKING and Verb.STATUS not in gates.CHANGES
    assert {s.verb for s in REGISTRY if s.target is TargetKind.NAMESPACE} == NAMESPACE_VERBS
    assert {Verb.STATUS, Verb.AUDIT} == OPTIONAL_SERVICE_VERBS


def test_switch_verbs_accept_exactly_their_declared_words() -> None:
    for verb in (Verb.FREEZE, Verb.MTLS):
        spec = VERBS[verb]
        namespace = " production" if spec.target is TargetKind.NAMESPACE else ""
        prefix = f"{verb.value}{namespace} "
        for word in spec.switches:
            assert parse(prefix + word).switch == word


@pytest.mark.parametrize("spec", [s for s in REGISTRY if s.takes_dry_run],
                         ids=lambda s: s.verb.value)
def test_every_verb_that_changes_the_mesh_can_show_its_plan(spec: object) -> None:
    """A dry run of an unmarked handler is refused; every changing verb's must be marked."""
    from jobs.runtime.handlers.common import plans_dry_run
    from meshbot.verbs import VerbSpec

    assert isinstance(spec, VerbSpec)
    assert plans_dry_run(tasks.HANDLERS[spec.verb])
