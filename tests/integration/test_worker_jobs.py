"""Worker jobs against a Kubernetes API that answers 409 and 5xx: the rollout ends right, and a
rollback always wins (DESIGN: safety rules).

Requests go in through the bot's one door (``jobs.api.submit``) and are run by an in-process RQ
worker in burst mode, exactly as ``meshbot worker`` runs them. RQ's retries wait in its scheduled
registry; ``release_retries`` moves them to their queue, as the scheduler does when their time
comes, so no test sleeps through a back-off.

Every test here injects the fault it is about (a 409 or 5xx on a given request, a write slipped in
just before meshbot's): they run on the emulator (``emulated_mesh``), which the real
kube-apiserver cannot be made to do on demand.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from jobs.adapters.audit import AuditLog
from jobs.adapters.rollout_store import RolloutStore
from jobs.domain import rollout as machine
from jobs.domain.rollout import Event, Phase
from jobs.runtime import api
from jobs.runtime.scheduled import release_due
from meshbot.commands import Command, Request, Verb
from meshbot.settings import Settings
from tests.fixtures.meshbot import CHANNEL, OPERATOR, EmulatedMesh

GROUP, VERSION, NS, SERVICE = "networking.istio.io", "v1beta1", "production", "payment-service"


def submit(emulated_mesh: EmulatedMesh, verb: Verb, percent: int | None = None) -> Request:
    return submit_command(emulated_mesh, Command(verb=verb, target=SERVICE, percent=percent))


def submit_command(emulated_mesh: EmulatedMesh, command: Command) -> Request:
    """``command`` from the operator, submitted as the bot does, with a fresh response_url."""
    request = Request(
        id=f"test-{command.verb.value}-{time.time_ns()}",
        command=command,
        user=OPERATOR,
        channel=CHANNEL,
        response_url=emulated_mesh.slack.new_response_url(channel=CHANNEL, user=OPERATOR),
        received_at=time.time(),
    )
    assert api.submit(emulated_mesh.redis, request, queue=Settings().queue_name)
    return request


def release_retries(client: redis.Redis) -> int:
    """Release every job RQ scheduled for a retry, as the ticker does once its time has come
    (here: as if an hour had passed)."""
    later = datetime.now(UTC) + timedelta(hours=1)
    return release_due(client, api.queue_names(Settings().queue_name), now=later)


def set_split(emulated_mesh: EmulatedMesh, stable: int, canary: int) -> None:
    def split(vs: dict[str, Any]) -> None:
        for destination in vs["spec"]["http"][0]["route"]:
            is_stable = destination["destination"]["subset"] == "stable"
            destination["weight"] = stable if is_stable else canary

    emulated_mesh.cluster.change(GROUP, VERSION, "virtualservices", NS, SERVICE, split)


def told(emulated_mesh: EmulatedMesh, request: Request) -> list[str]:
    """What the caller was told privately (response_url posts for this request)."""
    assert request.response_url is not None
    return [str(r.body.get("text", "")) for r in emulated_mesh.slack.responses()
            if request.response_url.endswith(r.token)]


def thread_texts(emulated_mesh: EmulatedMesh) -> list[str]:
    roots = emulated_mesh.slack.roots(CHANNEL)
    assert len(roots) == 1, [m.text for m in roots]
    return [m.text for m in emulated_mesh.slack.thread(CHANNEL, roots[0].ts)]


def outcomes(emulated_mesh: EmulatedMesh, request: Request) -> list[str]:
    return [e.outcome for e in AuditLog(emulated_mesh.redis).last(SERVICE, 50)
            if e.request_id == request.id]


# --- 409 and 5xx: retried, and the result is right ------------------------------------------------


def test_injected_conflicts_during_a_canary_are_retried(emulated_mesh: EmulatedMesh) -> None:
    emulated_mesh.cluster.fail(409, method="PATCH", plural="virtualservices", name=SERVICE, times=2)
    request = submit(emulated_mesh, Verb.CANARY, 10)
    emulated_mesh.run_jobs()

    assert emulated_mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    texts = thread_texts(emulated_mesh)
    assert sum("Weights applied" in t for t in texts) == 1
    assert "stable 90 / canary 10" in texts[-1]
    assert outcomes(emulated_mesh, request) == ["done"]
    assert told(emulated_mesh, request) == []


def test_a_concurrent_write_is_neither_lost_nor_overwritten(emulated_mesh: EmulatedMesh) -> None:
    """Someone edits the VirtualService between meshbot's read and its write: meshbot's write
    is refused (stale resourceVersion), it re-reads, and both changes survive."""

    def someone_adds_a_timeout(vs: dict[str, Any]) -> None:
        vs["spec"]["http"][0]["timeout"] = "5s"

    emulated_mesh.cluster.interfere(someone_adds_a_timeout, plural="virtualservices", name=SERVICE)
    request = submit(emulated_mesh, Verb.CANARY, 10)
    emulated_mesh.run_jobs()

    vs = emulated_mesh.cluster.get(GROUP, VERSION, "virtualservices", NS, SERVICE)
    assert vs["spec"]["http"][0]["timeout"] == "5s"
    assert emulated_mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    assert outcomes(emulated_mesh, request) == ["done"]


def test_a_server_error_is_retried_later_and_then_succeeds(emulated_mesh: EmulatedMesh) -> None:
    emulated_mesh.cluster.fail(503, method="PATCH", plural="virtualservices", name=SERVICE)
    request = submit(emulated_mesh, Verb.CANARY, 10)
    emulated_mesh.run_jobs()

    assert emulated_mesh.weights(SERVICE) == {"stable": 100, "canary": 0}  # not yet
    assert told(emulated_mesh, request) == []  # not given up: nothing to tell yet
    assert release_retries(emulated_mesh.redis) == 1

    emulated_mesh.run_jobs()

    assert emulated_mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    texts = thread_texts(emulated_mesh)  # one thread, not one per attempt
    assert sum("Weights applied" in t for t in texts) == 1
    assert outcomes(emulated_mesh, request) == ["done"]
    assert told(emulated_mesh, request) == []


def test_server_errors_on_reads_are_retried_too(emulated_mesh: EmulatedMesh) -> None:
    emulated_mesh.cluster.fail(500, method="GET", plural="virtualservices", name=SERVICE, times=1)
    emulated_mesh.cluster.fail(502, method="GET", plural="destinationrules", times=1)
    request = submit(emulated_mesh, Verb.CANARY, 10)
    emulated_mesh.run_jobs()
    while release_retries(emulated_mesh.redis):  # each attempt meets at most one fault
        emulated_mesh.run_jobs()
    assert emulated_mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    assert outcomes(emulated_mesh, request) == ["done"]


def test_the_caller_is_told_when_the_api_keeps_failing(emulated_mesh: EmulatedMesh) -> None:
    emulated_mesh.cluster.fail(503, method="PATCH", plural="virtualservices", name=SERVICE,
                               times=100)
    request = submit(emulated_mesh, Verb.CANARY, 10)
    emulated_mesh.run_jobs()
    attempts = 1
    while release_retries(emulated_mesh.redis):
        emulated_mesh.run_jobs()
        attempts += 1
    assert attempts == 6  # the first try and five retries
    assert emulated_mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    messages = told(emulated_mesh, request)
    assert len(messages) == 1 and "gave up" in messages[0] and "503" in messages[0]
    assert outcomes(emulated_mesh, request) == ["failed"]


# --- a rollback wins over a canary still in flight ------------------------------------------------


def test_canary_meeting_a_conflict_after_a_rollback_does_not_reapply(
        emulated_mesh: EmulatedMesh) -> None:
    """The rollback lands between the canary's read and its write: the canary's write is refused
    (409), and the job re-reads the rollout's phase before retrying — rolled_back, so it stops."""
    set_split(emulated_mesh, 95, 5)  # an earlier canary
    store = RolloutStore(emulated_mesh.redis)

    def rollback_lands(vs: dict[str, Any]) -> None:
        # What the rollback job does, in its order: mark the rollout, then move the traffic.
        store.update(SERVICE, lambda r: machine.apply(r, Event.ROLLBACK, time.time(), "test")
                     if r is not None else None)
        for destination in vs["spec"]["http"][0]["route"]:
            stable = destination["destination"]["subset"] == "stable"
            destination["weight"] = 100 if stable else 0

    emulated_mesh.cluster.interfere(rollback_lands, plural="virtualservices", name=SERVICE)
    request = submit(emulated_mesh, Verb.CANARY, 10)
    emulated_mesh.run_jobs()
    while release_retries(emulated_mesh.redis):
        emulated_mesh.run_jobs()

    assert emulated_mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    rollout = store.get(SERVICE)
    assert rollout is not None and rollout.phase is Phase.ROLLED_BACK
    assert not any("Weights applied" in t for t in thread_texts(emulated_mesh))
    assert "done" not in outcomes(emulated_mesh, request)


def test_canary_retried_after_a_rollback_does_not_reapply(emulated_mesh: EmulatedMesh) -> None:
    """The canary's write fails (503) and RQ schedules a retry; a rollback runs meanwhile. When
    the retry comes, the rollout is rolled back: the canary must not move traffic again."""
    emulated_mesh.cluster.fail(503, method="PATCH", plural="virtualservices", name=SERVICE)
    canary = submit(emulated_mesh, Verb.CANARY, 10)
    emulated_mesh.run_jobs()
    assert emulated_mesh.weights(SERVICE) == {"stable": 100, "canary": 0}

    submit(emulated_mesh, Verb.ROLLBACK)
    emulated_mesh.run_jobs()
    rollout = RolloutStore(emulated_mesh.redis).get(SERVICE)
    assert rollout is not None and rollout.phase is Phase.ROLLED_BACK

    assert release_retries(emulated_mesh.redis) == 1
    emulated_mesh.run_jobs()

    assert emulated_mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    rollout = RolloutStore(emulated_mesh.redis).get(SERVICE)
    assert rollout is not None and rollout.phase is Phase.ROLLED_BACK
    assert "done" not in outcomes(emulated_mesh, canary)


def test_rollback_is_not_blocked_by_conflicts(emulated_mesh: EmulatedMesh) -> None:
    set_split(emulated_mesh, 75, 25)
    emulated_mesh.cluster.fail(409, method="PATCH", plural="virtualservices", name=SERVICE, times=2)
    request = submit(emulated_mesh, Verb.ROLLBACK)
    emulated_mesh.run_jobs()
    assert emulated_mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert outcomes(emulated_mesh, request) == ["done"]
