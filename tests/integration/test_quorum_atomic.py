"""An approval that reaches its quorum is never spent without its work: the quorum and the
approved work's enqueue (with its audit entry and the message's refresh) land together or not
at all.

Before, the quorum was written first and the enqueue after it: a connection cut between the
two (Redis dying, the network dropping) left the request approved with no job, and Slack's
retry of the reaction was a duplicate, so the approved work never ran.
"""

from __future__ import annotations

import time

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs.adapters.approval_store import ApprovalStore
from jobs.adapters.audit import AuditLog
from jobs.domain.approval_rules import ApprovalState, PendingApproval, Reaction, Verdict
from jobs.runtime.approvals import REFRESH_TASK, approved_job_id, react
from meshbot.commands import Command, Request, Verb
from meshbot.settings import packaged_default_policy
from policies.loader import load_policy_file
from tests.integration.test_submit_atomic import cut_on

APPROVER = "U0APPROVER1"
CHANNEL, TS = "C0MESHOPS", "1796190000.000100"


def pending_promote(now: float) -> PendingApproval:
    request = Request(id="trigger-quorum", command=Command(verb=Verb.PROMOTE,
                                                           target="payment-service"),
                      user="U0OPERATOR1", channel=CHANNEL, received_at=now)
    return PendingApproval(channel=CHANNEL, ts=TS, request=request, plan="canary → 100",
                           precondition={}, required=1, eligible=(APPROVER,),
                           created_at=now, expires_at=now + 600)


# Where the connection is cut: the enqueue's push (the transaction never reaches Redis), or
# after Redis ran the transaction and before its answer came back.
@pytest.mark.parametrize(("marker", "after"), [(b"RPUSH", False), (b"EXEC", True)],
                         ids=["before-exec", "answer-lost"])
def test_a_quorum_cut_half_way_enqueues_the_work_once(
        redis_url: str, redis_client: redis.Redis, marker: bytes, after: bool) -> None:
    policy = load_policy_file(packaged_default_policy())
    now = time.time()
    ApprovalStore(redis_client).create(pending_promote(now))
    reaction = Reaction(event_id="Ev0QUORUM", added=True, user=APPROVER,
                        emoji=policy.approvals.approve_emoji, channel=CHANNEL, ts=TS)

    def count(client: redis.Redis) -> Verdict:
        return react(client, reaction, policy=policy, groups_of=lambda _u, _g: frozenset(),
                     queue="meshbot", now=now)

    # The transaction watched the approval: a cut connection is a failed WATCH to redis-py,
    # and the count is tried again on a fresh connection, judging what Redis now holds.
    with cut_on(redis_url, marker, after=after) as through_proxy:
        first = count(through_proxy)
    assert first in (Verdict.QUORUM, Verdict.DUPLICATE)
    # Slack delivers the same reaction event again: counted already.
    assert count(redis_client) is Verdict.DUPLICATE
    queue = Queue("meshbot", connection=redis_client, serializer=JSONSerializer)
    work = [job for job in queue.job_ids if job.startswith("approved-")]
    assert work == [approved_job_id("trigger-quorum", 1)]
    # What the quorum did is on record once, and the message is refreshed to say it.
    approvals = [(e.actor, e.outcome) for e in AuditLog(redis_client).last("payment-service", 10)]
    assert approvals == [(APPROVER, "approved")]
    refreshes = [Job.fetch(job, connection=redis_client, serializer=JSONSerializer).func_name
                 for job in queue.job_ids if not job.startswith("approved-")]
    assert refreshes == [REFRESH_TASK]
    approved = ApprovalStore(redis_client).get(CHANNEL, TS)
    assert approved is not None
    assert (approved.state, approved.approvals) == (ApprovalState.APPROVED, (APPROVER,))
