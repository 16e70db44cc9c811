"""A blue-green's two halves in the policy and the state machine: the start is judged as a
canary at 10% (no approval unless the tier's canary_above is lower), the cutover waits, still
watched, for the tier's promote approvals once the 90/10 step passed."""

from __future__ import annotations

import yaml

from jobs.domain import rollout as machine
from jobs.domain.rollout import Event, Phase, Rollout
from jobs.runtime.bluegreen_cutover import gated, waiting_for_cutover
from meshbot.settings import packaged_default_policy
from policies import Allow, load_default_policy, load_policy_text
from tests.unit.test_policy_decide import approval, ask


def test_the_start_needs_no_approval_in_any_packaged_tier() -> None:
    policy = load_default_policy()
    for service, view in ((n, policy.service(n)) for n in policy.service_names):
        assert view is not None
        assert ask(policy, "bluegreen", service) == Allow(), (service, view.tier)


def test_the_start_follows_the_canary_rules_at_10_percent() -> None:
    data = yaml.safe_load(packaged_default_policy().read_text())
    for tier in data["tiers"].values():
        tier.setdefault("approvals", {})["canary_above"] = 5
        tier["approvals"]["promote"] = 2
    policy = load_policy_text(yaml.safe_dump(data, sort_keys=False))
    service = policy.service_names[0]
    needed = approval(ask(policy, "bluegreen", service))
    assert needed.count == 2
    assert "needs approval above 5%, and a blue-green starts at 10%" in needed.reason


def started(bluegreen: bool) -> Rollout:
    return machine.start(
        rollout_id="r1", service="payment-service", namespace="production", steps=(10,),
        fixed=False, interval_s=2, failure_threshold=2, no_data_policy="hold", deadline_s=60,
        requested_by="U0OPERATOR1", channel="C0MESHOPS", now=0.0,
    ).model_copy(update={"bluegreen": bluegreen})


def test_a_passed_step_waits_watched_for_the_cutover_and_a_breach_still_rolls_back() -> None:
    ready = gated(machine.apply(started(True), Event.CHECK_PASSED, 2.0), 2.0)
    assert ready.phase is Phase.AWAITING_APPROVAL and ready.phase.watched
    assert ready.history[-1].event is Event.GATE and waiting_for_cutover(ready)
    assert ready.weight == 10
    # Checks go on meanwhile: a pass keeps waiting, a conclusive regression goes back.
    still = machine.apply(ready, Event.CHECK_PASSED, 4.0)
    assert still.phase is Phase.AWAITING_APPROVAL and waiting_for_cutover(still)
    back = machine.apply(still, Event.REGRESSION, 5.0)
    assert back.phase is Phase.ROLLED_BACK and back.weight == 0
    # Approved, it is ready to promote again: the promote takes it to 100.
    approved = machine.apply(still, Event.APPROVED, 6.0)
    assert approved.phase is Phase.READY_TO_PROMOTE
    assert machine.apply(approved, Event.PROMOTE, 6.0).weight == 100


def test_any_other_rollout_stops_ready_to_promote() -> None:
    passed = machine.apply(started(False), Event.CHECK_PASSED, 2.0)
    assert gated(passed, 2.0) == passed and passed.phase is Phase.READY_TO_PROMOTE
    assert not waiting_for_cutover(passed)
