"""How reactions on an approval request count. Pure: a pending approval and a reaction in, the
updated approval and a verdict out (persisted by ``jobs.approvals``).

The rules: each distinct authorised approver counts once; the requester
never counts; anyone else is ignored (and the caller audits it); an approver's reject emoji
cancels; removing the approve emoji withdraws that approval; nothing counts once the request is
closed or past its expiry; and one Slack event (``event_id``) is applied at most once, because
Slack re-delivers events it thinks were lost (``X-Slack-Retry-Num``) and a re-delivered
``reaction_added`` arriving after a ``reaction_removed`` would otherwise count again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from meshbot.commands import Request

# A request only ever sees a few dozen reactions; the bound keeps a hostile flood from growing
# the record without limit (older ids fall off; Slack retries come within minutes).
SEEN_EVENTS_KEPT = 200


class ApprovalState(StrEnum):
    OPEN = "open"  # collecting reactions
    APPROVED = "approved"  # quorum reached; the work is enqueued
    REJECTED = "rejected"  # an approver's reject emoji
    EXPIRED = "expired"  # the TTL passed first
    # Approved, but something that goes away (a lock, the freeze) is in the way: the approvals
    # are kept and the work runs once it is gone, until the request's expiry.
    WAITING = "waiting"
    VOIDED = "voided"  # approved, but the service changed before the work could run (or it
    # was refused at quorum: the approvals were not used)
    DONE = "done"  # the approved work ran

    @property
    def closed(self) -> bool:
        """No approval counts any more (a waiting request has its quorum; an approver can still
        reject it or withdraw theirs)."""
        return self is not ApprovalState.OPEN

    @property
    def expires(self) -> bool:
        """Still ends at the request's expiry if nothing else ends it first."""
        return self in (ApprovalState.OPEN, ApprovalState.WAITING)


class Verdict(StrEnum):
    """What one reaction did; the caller audits and notifies from this."""

    NOT_A_REQUEST = "not_a_request"
    OTHER_EMOJI = "other_emoji"
    DUPLICATE = "duplicate"
    CLOSED = "closed"
    EXPIRED = "expired"
    REQUESTER = "requester"
    NOT_APPROVER = "not_approver"
    COUNTED = "counted"
    QUORUM = "quorum"
    WITHDRAWN = "withdrawn"
    REJECTED = "rejected"
    NO_CHANGE = "no_change"

    @property
    def changes_message(self) -> bool:
        """Whether the approval message should be re-rendered."""
        return self in (Verdict.COUNTED, Verdict.WITHDRAWN, Verdict.REJECTED, Verdict.QUORUM)

    @property
    def audited(self) -> bool:
        return self in (Verdict.REQUESTER, Verdict.NOT_APPROVER, Verdict.COUNTED,
                        Verdict.QUORUM, Verdict.WITHDRAWN, Verdict.REJECTED, Verdict.EXPIRED,
                        Verdict.CLOSED)


class PendingApproval(BaseModel):
    """One approval request, as stored in Redis under its Slack message (channel, ts)."""

    model_config = ConfigDict(frozen=True)

    channel: str
    ts: str
    request: Request
    plan: str  # what will change, written for a person (before → after)
    # Facts the request was made under, e.g. {"weights": "stable 100 / canary 0",
    # "rollout": "none"}; the approved work runs only if they still hold.
    precondition: dict[str, str]
    required: int
    eligible: tuple[str, ...]  # user (U…) and user-group (S…) ids
    created_at: float
    expires_at: float
    permalink: str | None = None  # of the approval message, for the audit
    thread_link: str | None = None  # the rollout thread this request is about, if any
    state: ApprovalState = ApprovalState.OPEN
    approvals: tuple[str, ...] = ()  # distinct approvers, in the order they reacted
    closed_by: str | None = None  # who rejected
    detail: str = ""  # why it was voided
    waiting_for: str = ""  # what the approved work waits for (WAITING, or expired waiting)
    started: bool = False  # the approved work passed its re-check and began (retries skip it)
    runs: int = 0  # times the approved work was enqueued (each run is its own RQ job)
    announced: ApprovalState | None = None  # the last state the thread was told about
    seen_events: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reaction:
    """A ``reaction_added`` / ``reaction_removed`` event on a message."""

    event_id: str
    added: bool
    user: str
    emoji: str
    channel: str
    ts: str


def emoji_name(reaction: str) -> str:
    """Slack appends the skin tone (``+1::skin-tone-2``); the tone does not change the vote."""
    return reaction.split("::", 1)[0]


def judge(pending: PendingApproval, reaction: Reaction, *, approver: bool, approve_emoji: str,
          reject_emoji: str, now: float) -> tuple[PendingApproval, Verdict]:
    """Apply one reaction. ``approver``: the reacting user may approve this request."""
    if reaction.event_id and reaction.event_id in pending.seen_events:
        return pending, Verdict.DUPLICATE
    emoji = emoji_name(reaction.emoji)
    if emoji not in (approve_emoji, reject_emoji):
        return pending, Verdict.OTHER_EMOJI
    if pending.state is ApprovalState.WAITING and now < pending.expires_at:
        return _judge_waiting(pending, reaction, emoji, approver=approver,
                              reject_emoji=reject_emoji)
    if pending.state.closed:
        return pending, Verdict.CLOSED
    if now >= pending.expires_at:
        # The expiry job closes it and says so; a late reaction changes nothing meanwhile.
        return pending, Verdict.EXPIRED
    seen = pending.seen_events
    if reaction.event_id:
        seen = (*seen, reaction.event_id)[-SEEN_EVENTS_KEPT:]
    marked = pending.model_copy(update={"seen_events": seen})
    if reaction.user == pending.request.user:
        return marked, Verdict.REQUESTER
    if not approver:
        return marked, Verdict.NOT_APPROVER
    if emoji == reject_emoji:
        if not reaction.added:
            return marked, Verdict.NO_CHANGE  # taking back a rejection cannot reopen it
        return marked.model_copy(update={"state": ApprovalState.REJECTED,
                                         "closed_by": reaction.user}), Verdict.REJECTED
    if not reaction.added:
        if reaction.user not in pending.approvals:
            return marked, Verdict.NO_CHANGE
        left = tuple(a for a in pending.approvals if a != reaction.user)
        return marked.model_copy(update={"approvals": left}), Verdict.WITHDRAWN
    if reaction.user in pending.approvals:
        return marked, Verdict.NO_CHANGE
    approvals = (*pending.approvals, reaction.user)
    if len(approvals) >= pending.required:
        return marked.model_copy(update={"approvals": approvals, "runs": pending.runs + 1,
                                         "state": ApprovalState.APPROVED}), Verdict.QUORUM
    return marked.model_copy(update={"approvals": approvals}), Verdict.COUNTED


def _judge_waiting(pending: PendingApproval, reaction: Reaction, emoji: str, *, approver: bool,
                   reject_emoji: str) -> tuple[PendingApproval, Verdict]:
    """A waiting request has its quorum: more approvals change nothing, but an approver's
    reject still cancels it, and a withdrawn approval below the quorum opens it again."""
    if reaction.user == pending.request.user or not approver:
        return pending, Verdict.CLOSED
    seen = pending.seen_events
    if reaction.event_id:
        seen = (*seen, reaction.event_id)[-SEEN_EVENTS_KEPT:]
    marked = pending.model_copy(update={"seen_events": seen})
    if emoji == reject_emoji and reaction.added:
        return marked.model_copy(update={"state": ApprovalState.REJECTED, "waiting_for": "",
                                         "closed_by": reaction.user}), Verdict.REJECTED
    if emoji == reject_emoji or reaction.added or reaction.user not in pending.approvals:
        return pending, Verdict.CLOSED
    left = tuple(a for a in pending.approvals if a != reaction.user)
    if len(left) >= pending.required:
        return marked.model_copy(update={"approvals": left}), Verdict.WITHDRAWN
    return marked.model_copy(update={"approvals": left, "state": ApprovalState.OPEN,
                                     "waiting_for": ""}), Verdict.WITHDRAWN


def may_approve(user: str, eligible: tuple[str, ...], user_groups: frozenset[str]) -> bool:
    """``user`` is named among ``eligible`` directly or through one of its user groups."""
    return user in eligible or not user_groups.isdisjoint(eligible)


def expire(pending: PendingApproval, now: float) -> PendingApproval | None:
    """The request expired (still collecting, or its approved work still waiting), or None when
    it ended otherwise already or is not yet due."""
    if not pending.state.expires or now < pending.expires_at:
        return None
    return pending.model_copy(update={"state": ApprovalState.EXPIRED})


def changed_facts(before: dict[str, str], now: dict[str, str]) -> list[tuple[str, str, str]]:
    """(fact, was, is) for every precondition that no longer holds."""
    keys = list(dict.fromkeys([*before, *now]))
    return [(k, before.get(k, "none"), now.get(k, "none")) for k in keys
            if before.get(k) != now.get(k)]
