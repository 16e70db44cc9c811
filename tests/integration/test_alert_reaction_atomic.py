"""A rollback emoji on an alert thread is never half taken: the rollback and its note in the
thread land together or not at all, and a refusal's audit entry and its note land once, however
often Slack delivers the same reaction event.

Before, Redis failing surfaced as a raw redis error (a Bolt 500 with a traceback); the rollback
was submitted first and its note enqueued after, so a connection cut between the two answered
Slack's retry "duplicate" and the note was never posted; and a refusal was audited again on
every retry.
"""

from __future__ import annotations

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs.adapters.alert_threads import AlertThread, AlertThreads
from jobs.adapters.audit import AuditLog
from jobs.runtime import api
from meshbot.errors import QueueUnavailable
from meshbot.settings import packaged_default_policy
from policies.loader import load_policy_file
from tests.integration.test_submit_atomic import cut_on

SERVICE = "payment-service"
CHANNEL, TS = "C0MESHOPS", "1796190000.000300"
OPERATOR, STRANGER = "U0OPERATOR1", "U0STRANGER9"


def alert_on(client: redis.Redis) -> None:
    """An alert thread's root about the service, as the alert job leaves it."""
    AlertThreads(client).save(AlertThread(group_key='{}:{alertname="SLOBurn"}', channel=CHANNEL,
                                          ts=TS, service=SERVICE, digest="d" * 16))


def rewind(client: redis.Redis, user: str, event_id: str) -> str:
    reaction = api.Reaction(event_id=event_id, added=True, user=user, emoji="rewind",
                            channel=CHANNEL, ts=TS)
    return api.alert_reaction(client, reaction, policy=load_policy_file(packaged_default_policy()),
                              groups_of=lambda _u, _g: frozenset(), queue="meshbot")


def notes(client: redis.Redis) -> list[tuple[object, ...]]:
    """The notes queued for the alert thread (or the person refused): their arguments."""
    queue = Queue("meshbot", connection=client, serializer=JSONSerializer)
    jobs = [Job.fetch(job, connection=client, serializer=JSONSerializer) for job in queue.job_ids]
    return [tuple(job.args) for job in jobs if job.func_name == api.NOTE_TASK]


def rollbacks(client: redis.Redis) -> list[str]:
    return Queue("meshbot" + api.URGENT_SUFFIX, connection=client,
                 serializer=JSONSerializer).job_ids


def cut_then_delivered_again(redis_url: str, client: redis.Redis, marker: bytes, after: bool,
                             user: str, event_id: str, *, cut_says: str, taken: str) -> None:
    """The reaction ``event_id`` of ``user`` on the alert thread, its connection cut at
    ``marker`` (before it, or once Redis ran it: ``after``), is QueueUnavailable saying
    ``cut_says``; Slack delivers the same event again, and again: the first of those is
    ``taken`` (or "duplicate" when Redis had run it before the cut), the second "duplicate"."""
    alert_on(client)
    with cut_on(redis_url, marker, after=after) as through_proxy, \
            pytest.raises(QueueUnavailable, match=cut_says):
        rewind(through_proxy, user, event_id)
    assert rewind(client, user, event_id) == ("duplicate" if after else taken)
    assert rewind(client, user, event_id) == "duplicate"


def test_redis_failing_while_reading_the_alert_is_queue_unavailable(
        redis_url: str, redis_client: redis.Redis) -> None:
    alert_on(redis_client)
    with cut_on(redis_url, b"GET") as through_proxy, \
            pytest.raises(QueueUnavailable, match="alert reaction"):
        rewind(through_proxy, OPERATOR, "Ev0READ")
    assert rewind(redis_client, OPERATOR, "Ev0READ") == "rollback"


# Where the connection is cut: as the script call starts, inside it among the note's writes
# (the rollback's come first), and once Redis ran it, before its answer came back.
@pytest.mark.parametrize(("marker", "after"), [(b"EVALSHA", False), (b"note_job", False),
                                               (b"note_job", True)],
                         ids=["script-call", "among-the-notes-writes", "answer-lost"])
def test_a_rollback_cut_half_way_lands_with_its_note_once(
        redis_url: str, redis_client: redis.Redis, marker: bytes, after: bool) -> None:
    cut_then_delivered_again(redis_url, redis_client, marker, after, OPERATOR, "Ev0ROLLBACK",
                             cut_says="Redis did not take", taken="rollback")
    assert rollbacks(redis_client) == [api.job_id("alert-rollback:Ev0ROLLBACK")]
    assert notes(redis_client) == [(CHANNEL, TS, OPERATOR, SERVICE, None)]


@pytest.mark.parametrize(("marker", "after"), [(b"XADD", False), (b"note_job", False),
                                               (b"note_job", True)],
                         ids=["among-the-audit-writes", "among-the-notes-writes",
                              "answer-lost"])
def test_a_refusal_cut_half_way_is_audited_and_told_once(
        redis_url: str, redis_client: redis.Redis, marker: bytes, after: bool) -> None:
    cut_then_delivered_again(redis_url, redis_client, marker, after, STRANGER, "Ev0REFUSED",
                             cut_says="Redis did not take the refusal", taken="refused")
    refusals = [(e.actor, e.outcome) for e in AuditLog(redis_client).last(SERVICE, 10)]
    assert refusals == [(STRANGER, "refused")]
    [told] = notes(redis_client)
    assert told[:4] == (CHANNEL, TS, STRANGER, SERVICE) and told[4]  # why, for the person
    assert rollbacks(redis_client) == []


def test_each_reaction_event_is_its_own_request(redis_client: redis.Redis) -> None:
    """Two people (two events) asking for the rollback: both are taken and both noted."""
    alert_on(redis_client)
    assert rewind(redis_client, OPERATOR, "Ev0FIRST") == "rollback"
    assert rewind(redis_client, "U0OPERATOR2", "Ev0SECOND") == "rollback"
    assert len(rollbacks(redis_client)) == 2
    assert [n[2] for n in notes(redis_client)] == [OPERATOR, "U0OPERATOR2"]
