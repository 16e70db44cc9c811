"""How reactions count on an approval request: the pure rules in ``jobs.approval_rules``."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.domain.approval_rules import (
    ApprovalState,
    PendingApproval,
    Reaction,
    Verdict,
    changed_facts,
    expire,
    judge,
    may_approve,
)
from meshbot.commands import Command, Request, Verb

REQUESTER = "U0OPERATOR1"
APPROVERS = ("U0APPROVER1", "U0APPROVER2", "U0APPROVER3")
NOW = 1_000.0
_ids = itertools.count()


def pending(required: int = 2, **changes: object) -> PendingApproval:
    request = Request(id="trigger-1", command=Command(verb=Verb.CANARY,
                      target="payment-service", percent=30), user=REQUESTER,
                      channel="C0MESHOPS", approvals_required=required,
                      eligible_approvers=APPROVERS)
    base = PendingApproval(channel="C0MESHOPS", ts="1.000001", request=request,
                           plan="stable 100→70 / canary 0→30",
                           precondition={"weights": "stable 100 / canary 0"}, required=required,
                           eligible=APPROVERS, created_at=NOW, expires_at=NOW + 1800)
    return base.model_copy(update=changes)


def react(p: PendingApproval, user: str, emoji: str = "white_check_mark", *, added: bool = True,
          approver: bool | None = None, now: float = NOW + 1,
          event_id: str | None = None) -> tuple[PendingApproval, Verdict]:
    reaction = Reaction(event_id=event_id or f"Ev{next(_ids)}", added=added, user=user,
                        emoji=emoji, channel=p.channel, ts=p.ts)
    allowed = user in APPROVERS if approver is None else approver
    return judge(p, reaction, approver=allowed, approve_emoji="white_check_mark",
                 reject_emoji="x", now=now)


def test_quorum_needs_distinct_approvers() -> None:
    p, verdict = react(pending(), "U0APPROVER1")
    assert verdict is Verdict.COUNTED and p.approvals == ("U0APPROVER1",)
    p, verdict = react(p, "U0APPROVER1")  # the same person again (a second event)
    assert verdict is Verdict.NO_CHANGE and p.state is ApprovalState.OPEN
    p, verdict = react(p, "U0APPROVER2")
    assert verdict is Verdict.QUORUM
    assert p.state is ApprovalState.APPROVED
    assert p.approvals == ("U0APPROVER1", "U0APPROVER2")


def test_the_requesters_own_reaction_never_counts() -> None:
    p, verdict = react(pending(required=1), REQUESTER, approver=True)
    assert verdict is Verdict.REQUESTER
    assert p.approvals == () and p.state is ApprovalState.OPEN
    p, verdict = react(p, REQUESTER, "x", approver=True)
    assert verdict is Verdict.REQUESTER and p.state is ApprovalState.OPEN


def test_a_non_approver_is_ignored() -> None:
    p, verdict = react(pending(required=1), "U0SOMEONE")
    assert verdict is Verdict.NOT_APPROVER and verdict.audited
    assert p.approvals == () and p.state is ApprovalState.OPEN
    p, verdict = react(p, "U0SOMEONE", "x")
    assert verdict is Verdict.NOT_APPROVER and p.state is ApprovalState.OPEN


def test_an_approvers_reject_cancels_even_after_approvals() -> None:
    p, _ = react(pending(), "U0APPROVER1")
    p, verdict = react(p, "U0APPROVER2", "x")
    assert verdict is Verdict.REJECTED
    assert p.state is ApprovalState.REJECTED and p.closed_by == "U0APPROVER2"
    p, verdict = react(p, "U0APPROVER3")
    assert verdict is Verdict.CLOSED and p.state is ApprovalState.REJECTED


def test_removing_the_reaction_withdraws_the_approval() -> None:
    p, _ = react(pending(), "U0APPROVER1")
    p, verdict = react(p, "U0APPROVER1", added=False)
    assert verdict is Verdict.WITHDRAWN and p.approvals == ()
    p, _ = react(p, "U0APPROVER2")
    assert p.state is ApprovalState.OPEN  # one of two, not two: the withdrawn one is gone


def test_a_redelivered_event_counts_once() -> None:
    p, _ = react(pending(), "U0APPROVER1", event_id="Ev1")
    p, _ = react(p, "U0APPROVER1", added=False, event_id="Ev2")
    # Slack retries Ev1 after the removal: without the event id it would count again.
    p, verdict = react(p, "U0APPROVER1", event_id="Ev1")
    assert verdict is Verdict.DUPLICATE and p.approvals == ()


def test_late_reactions_do_nothing() -> None:
    p, verdict = react(pending(required=1), "U0APPROVER1", now=NOW + 1800)
    assert verdict is Verdict.EXPIRED and p.state is ApprovalState.OPEN and p.approvals == ()
    expired = expire(p, NOW + 1800)
    assert expired is not None and expired.state is ApprovalState.EXPIRED
    after, verdict = react(expired, "U0APPROVER1", now=NOW + 1900)
    assert verdict is Verdict.CLOSED and after == expired


def test_expiry_only_once_and_only_when_due() -> None:
    assert expire(pending(), NOW + 10) is None
    approved, _ = react(pending(required=1), "U0APPROVER1")
    assert expire(approved, NOW + 1800) is None


def test_other_emoji_and_skin_tones() -> None:
    p, verdict = react(pending(), "U0APPROVER1", "eyes")
    assert verdict is Verdict.OTHER_EMOJI and p == pending()
    p, verdict = react(pending(required=1), "U0APPROVER1", "white_check_mark::skin-tone-3")
    assert verdict is Verdict.QUORUM


def test_group_membership_makes_an_approver() -> None:
    eligible = ("U0APPROVER1", "S0ONCALL")
    assert may_approve("U0APPROVER1", eligible, frozenset())
    assert may_approve("U0ALICE", eligible, frozenset({"S0ONCALL"}))
    assert not may_approve("U0ALICE", eligible, frozenset({"S0OTHER"}))


def test_changed_facts_name_what_moved() -> None:
    assert changed_facts({"weights": "a"}, {"weights": "a"}) == []
    assert changed_facts({"weights": "stable 100 / canary 0", "rollout": "none"},
                         {"weights": "stable 90 / canary 10", "rollout": "none"}) == [
        ("weights", "stable 100 / canary 0", "stable 90 / canary 10")]


REACTORS = st.sampled_from([REQUESTER, *APPROVERS, "U0SOMEONE"])
EVENTS = st.lists(st.tuples(REACTORS, st.sampled_from(["white_check_mark", "x", "tada"]),
                            st.booleans(), st.integers(0, 5)), max_size=30)


@given(EVENTS)
def test_any_sequence_keeps_the_rules(events: list[tuple[str, str, bool, int]]) -> None:
    """Whatever arrives (retries included): approvals are distinct eligible non-requesters, and
    the quorum is reached only with ``required`` of them."""
    p = pending()
    for user, emoji, added, event in events:
        before = p
        p, verdict = react(p, user, emoji, added=added, event_id=f"Ev{user}{emoji}{added}{event}")
        assert len(set(p.approvals)) == len(p.approvals)
        assert REQUESTER not in p.approvals and "U0SOMEONE" not in p.approvals
        if verdict is Verdict.QUORUM:
            assert before.state is ApprovalState.OPEN and len(p.approvals) == p.required
        if before.state.closed:
            assert p.state is before.state


@pytest.mark.parametrize("state", [s for s in ApprovalState if s is not ApprovalState.OPEN])
def test_closed_requests_ignore_everything(state: ApprovalState) -> None:
    p = pending(state=state)
    after, verdict = react(p, "U0APPROVER1")
    assert verdict is Verdict.CLOSED and after == p


# ------------------------------------------------------------------- approved, work waiting


def waiting() -> PendingApproval:
    return pending(state=ApprovalState.WAITING, approvals=APPROVERS[:2], runs=1,
                   waiting_for="payment-service is busy")


def test_a_waiting_request_keeps_its_approvals_and_ignores_more() -> None:
    p, verdict = react(waiting(), "U0APPROVER3")
    assert verdict is Verdict.CLOSED and p == waiting()
    p, verdict = react(waiting(), REQUESTER, "x")
    assert verdict is Verdict.CLOSED and p == waiting()


def test_an_approvers_reject_cancels_a_waiting_request() -> None:
    p, verdict = react(waiting(), "U0APPROVER3", "x")
    assert verdict is Verdict.REJECTED and p.state is ApprovalState.REJECTED
    assert p.closed_by == "U0APPROVER3" and p.waiting_for == ""


def test_a_withdrawal_below_the_quorum_opens_it_again() -> None:
    p, verdict = react(waiting(), "U0APPROVER1", added=False)
    assert verdict is Verdict.WITHDRAWN and p.state is ApprovalState.OPEN
    assert p.approvals == ("U0APPROVER2",)
    p, verdict = react(p, "U0APPROVER3")
    assert verdict is Verdict.QUORUM and p.runs == 2  # its own RQ job, not the first one's


def test_a_waiting_request_expires_at_its_expiry() -> None:
    assert expire(waiting(), NOW + 1799) is None
    expired = expire(waiting(), NOW + 1800)
    assert expired is not None and expired.state is ApprovalState.EXPIRED
    assert expired.waiting_for  # said as "expired while waiting: not used"
    assert expire(pending(state=ApprovalState.APPROVED), NOW + 1800) is None
