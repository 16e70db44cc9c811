"""The fault matrix (issue 14): every outside system meshbot depends on failing the way it does
in production, one row each, and for every row the three things a person relies on afterwards.

- Kubernetes: a 409 once, a 500 twice then OK, a 500 until the retries run out, a write whose
  answer never comes (meshbot's client times out);
- Slack: a 429 with ``Retry-After`` and a 500 on ``chat.postMessage``, each on the thread's root
  and on its reply; a root or a reply whose answer comes too late, or is a 500, though Slack
  kept it;
- Prometheus: down (the connection is refused), slow (it accepts and never answers, past
  meshbot's query timeout) — met by the analysis tick of a running canary.

Each command row runs ``/mesh canary payment-service 10`` (parsed by the bot's grammar, submitted
through the bot's one door, run by an in-process RQ worker as ``meshbot worker`` runs it; RQ's
retries released by ``release_retries`` instead of waited for), then lets meshbot settle as its
ticker would (owed reports delivered, the reconcile past its grace period). Then:

1. the end state: the weights read back from the emulated API server and the rollout's phase
   in Redis say the same thing;
2. the thread: what a person reads there (and what the caller was told privately) says what
   happened, in words — no library text (``HTTPConnectionPool``, ``Max retries``, ...);
3. the audit: one entry for the request, with its outcome, and before/after matching the mesh.

Timeouts are meshbot's own clients built with short timeouts (the production defaults are 5 s
for Kubernetes reads, 10 s for Slack, 5 s for Prometheus), so the module stays fast.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from bot.grammar import parse
from jobs.adapters.audit import AuditEntry, AuditLog
from jobs.adapters.kube import KubeClient, load_api_client
from jobs.adapters.prometheus import MetricsSource
from jobs.adapters.slack_notifier import RATE_WINDOW_PREFIX, Notifier
from jobs.domain.rollout import Phase
from jobs.domain.routes import Weights
from jobs.runtime import api, context
from jobs.runtime.analysis import tick
from jobs.runtime.reconcile import GRACE_S, reconcile
from jobs.runtime.reports import deliver_owed
from meshbot.commands import Request
from meshbot.settings import Settings
from playground.redis_server import free_port
from playground.slack_workspace import Fault
from tests.fixtures.meshbot import OPERATOR, EmulatedMesh
from tests.integration.test_worker_jobs import (
    SERVICE,
    release_retries,
    submit_command,
    thread_texts,
    told,
)

COMMAND = f"canary {SERVICE} 10"
BEFORE, APPLIED = Weights(stable=100, canary=0), Weights(stable=90, canary=10)
POST = "chat.postMessage"
RETRY_AFTER_S = 30  # longer than the notifier waits inline (3 s): the job gives way
KUBE_TIMEOUT = (1.0, 0.5)  # (connect, read) s: meshbot's Kubernetes client in these rows
SLACK_TIMEOUT_S = 1.0  # meshbot's Slack client (its WebClient takes whole seconds)
PROMETHEUS_TIMEOUT_S = 0.5
MAX_ATTEMPTS = 10  # more than RQ's schedule allows: a loop that does not end is a failure

# Library text that must never reach a person (it goes to the log).
LIBRARY_TEXT = ("HTTPConnectionPool", "HTTPSConnectionPool", "ConnectionPool", "Max retries",
                "urllib3", "requests.exceptions", "ReadTimeout", "ConnectTimeout", "Errno",
                "Traceback", "object at 0x", "SlackApiError", "ApiException",
                "read operation timed out", "NewConnectionError")


# --- the rig: what each row may do to meshbot's outside world ------------------------------------


@dataclass
class Rig:
    mesh: EmulatedMesh
    monkeypatch: pytest.MonkeyPatch
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def slack_fault_on_post(self, n: int, fault: Fault) -> None:
        """Answer the ``n``-th ``chat.postMessage`` from now with ``fault`` (1: the thread's
        root, 2: its first reply)."""
        original = self.mesh.slack.take_fault
        lock, seen = threading.Lock(), [0]

        def take(method: str) -> Fault | None:
            if method == POST:
                with lock:
                    seen[0] += 1
                    if seen[0] == n:
                        return fault
            return original(method)

        self.monkeypatch.setattr(self.mesh.slack, "take_fault", take)

    def slack_late_answer_on_post(self, n: int) -> None:
        """Slack keeps the ``n``-th ``chat.postMessage`` and answers only after meshbot's client
        gave up waiting (held until the test ends, at most a few seconds)."""
        ctx = context.current()
        ctx.__dict__["notifier"] = Notifier.from_settings(ctx.settings, redis_client=ctx.redis,
                                                          timeout=SLACK_TIMEOUT_S)
        original = self.mesh.slack.answer
        lock, seen, released = threading.Lock(), [0], threading.Event()

        def answer(method: str, params: dict[str, Any], headers: dict[str, str]
                   ) -> tuple[int, dict[str, str], Any]:
            served = original(method, params, headers)
            if method == POST:
                with lock:
                    seen[0] += 1
                    late = seen[0] == n
                if late:
                    released.wait(SLACK_TIMEOUT_S * 5)
            return served

        self.monkeypatch.setattr(self.mesh.slack, "answer", answer)
        self.cleanups.append(released.set)

    def slack_answer_without(self, method: str, name: str) -> None:
        """Slack answers ``method`` ok but leaves ``name`` out of its answer (a field a real
        server may omit: meshbot must not fail the job for it)."""
        original = self.mesh.slack.answer

        def answer(called: str, params: dict[str, Any], headers: dict[str, str]
                   ) -> tuple[int, dict[str, str], Any]:
            status, extra, body = original(called, params, headers)
            if called == method and isinstance(body, dict):
                body = {k: v for k, v in body.items() if k != name}
            return status, extra, body

        self.monkeypatch.setattr(self.mesh.slack, "answer", answer)

    def short_kube_timeout(self) -> None:
        ctx = context.current()
        kube = KubeClient(load_api_client(), settings=ctx.settings, timeout=KUBE_TIMEOUT)
        ctx.__dict__["kube"] = kube
        # The stalled request is let go (on the emulator's loop) before the client is closed.
        self.cleanups.append(lambda: self.mesh.cluster.call(lambda e: e.release_stalls()))
        self.cleanups.append(kube.close)

    def count_patches(self) -> list[int]:
        """Count the VirtualService writes meshbot's Kubernetes client sends (a spy: each is
        sent as usual)."""
        kube = context.current().kube
        original, sent = kube.patch_virtual_service_route, [0]

        def patch(*args: Any, **kwargs: Any) -> Any:
            sent[0] += 1
            return original(*args, **kwargs)

        self.monkeypatch.setattr(kube, "patch_virtual_service_route", patch)
        return sent

    def an_hour_passes(self) -> None:
        """What an hour does to Redis: Slack's rate-limit windows (keys with a TTL) are over."""
        for key in self.mesh.redis.scan_iter(match=RATE_WINDOW_PREFIX + "*"):
            self.mesh.redis.delete(key)


def retry_waits(mesh: EmulatedMesh, since: float) -> list[float]:
    """How long after ``since`` each job RQ scheduled for a retry is to run (s)."""
    waits = []
    for name in api.queue_names(Settings().queue_name):
        registry = Queue(name, connection=mesh.redis, serializer=JSONSerializer) \
            .scheduled_job_registry
        scored: list[tuple[bytes, float]] = mesh.redis.zrange(  # type: ignore[assignment]
            registry.key, 0, -1, withscores=True)
        waits += [due - since for _, due in scored]
    return waits


# --- driving a row -------------------------------------------------------------------------------


def slash(mesh: EmulatedMesh, text: str) -> Request:
    """``/mesh <text>`` as the bot hands it to the workers: parsed by the grammar, submitted
    through ``jobs.api.submit`` with a fresh response_url."""
    return submit_command(mesh, parse(text))


def run_to_the_end(rig: Rig) -> tuple[int, list[float]]:
    """Run the request's job and every retry RQ schedules for it, each released as its time
    comes; how many attempts ran, and how long each retry was scheduled to wait."""
    mesh = rig.mesh
    ran = time.time()
    mesh.run_jobs()
    attempts, waits = 1, []
    while scheduled := retry_waits(mesh, since=ran):
        waits += scheduled
        rig.an_hour_passes()
        assert release_retries(mesh.redis) == len(scheduled)
        ran = time.time()
        mesh.run_jobs()
        attempts += 1
        assert attempts <= MAX_ATTEMPTS, "the retries do not end"
    return attempts, waits


def settle(mesh: EmulatedMesh) -> None:
    """What meshbot's ticker does next: owed reports delivered, and the reconcile once its grace
    period is over (a change that ended without writing its weights is settled)."""
    ctx = context.current()
    deliver_owed(ctx)
    reconcile(ctx, now=time.time() + GRACE_S + 1)
    deliver_owed(ctx)


# --- the three assertions ------------------------------------------------------------------------


def as_dict(weights: Weights) -> dict[str, int]:
    return {"stable": weights.stable, "canary": weights.canary}


def assert_end_state(mesh: EmulatedMesh, weights: Weights, phase: Phase) -> None:
    """The API server's weights and the rollout's phase, each as expected and in agreement."""
    rollout = context.current().store.get(SERVICE)
    assert rollout is not None
    read_back = mesh.weights(SERVICE)
    assert (read_back, rollout.phase) == (as_dict(weights), phase)
    says = BEFORE if rollout.phase is Phase.ROLLED_BACK else Weights.canary_at(rollout.weight)
    assert read_back == as_dict(says), f"{rollout.phase.value} at {rollout.weight}%"


def assert_in_words(texts: list[str]) -> None:
    for text in texts:
        shown = [t for t in LIBRARY_TEXT if t in text]
        assert not shown, f"library text {shown} reached a person: {text!r}"


def audit_of(mesh: EmulatedMesh) -> list[AuditEntry]:
    return list(reversed(AuditLog(mesh.redis).last(SERVICE, 50)))  # oldest first


def assert_audit(mesh: EmulatedMesh, request: Request, outcome: str,
                 before: Weights | None, after: Weights | None) -> AuditEntry:
    """One entry for the request, with its outcome, and before/after as the mesh was and is."""
    mine = [e for e in audit_of(mesh) if e.request_id == request.id]
    assert len(mine) == 1, mine
    [entry] = mine
    assert (entry.actor, entry.action, entry.target) == (OPERATOR, "canary", SERVICE)
    assert entry.outcome == outcome, entry
    # A link to the thread, or none when Slack gave none: never a link that goes nowhere.
    assert entry.permalink is None or entry.permalink.startswith("https://"), entry
    assert entry.before == (str(before) if before else None), entry
    assert entry.after == (str(after) if after else None), entry
    if after is not None:
        assert entry.after == str(Weights(**mesh.weights(SERVICE)))
    return entry


# --- the command rows ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandRow:
    inject: Callable[[Rig], None]
    attempts: int  # of the request's job: the first and its retries
    patches: int  # VirtualService writes meshbot sent (its own re-read after a 409 included)
    retried_because: str = ""  # meshbot's words for the fault, in its retry's log line
    applied: bool = True  # False: it gave up, and meshbot settled the rollout back
    waits_at_least: float = 0.0  # a retry was scheduled no sooner than this (Retry-After)


def _kube_fail(status: int, times: int) -> Callable[[Rig], None]:
    def inject(rig: Rig) -> None:
        rig.mesh.cluster.fail(status, method="PATCH", plural="virtualservices", name=SERVICE,
                              times=times)
    return inject


def _kube_lost_answer(rig: Rig) -> None:
    rig.mesh.cluster.lose_answer(503, method="PATCH", plural="virtualservices", name=SERVICE)


def _kube_stall(rig: Rig) -> None:
    rig.short_kube_timeout()
    rig.mesh.cluster.stall(10, method="PATCH", plural="virtualservices", name=SERVICE)


def _slack_429(n: int) -> Callable[[Rig], None]:
    return lambda rig: rig.slack_fault_on_post(n, Fault(429, "ratelimited", RETRY_AFTER_S))


def _slack_500(n: int) -> Callable[[Rig], None]:
    return lambda rig: rig.slack_fault_on_post(n, Fault(500, "fatal_error"))


def _slack_late(n: int) -> Callable[[Rig], None]:
    return lambda rig: rig.slack_late_answer_on_post(n)


ROOT, REPLY = 1, 2  # which chat.postMessage of the command meets the fault

KUBE_500 = f"the Kubernetes API answered 500 for VirtualService production/{SERVICE}"
SLACK_429 = f"Slack rate-limited {POST}; retry in {RETRY_AFTER_S}s"
SLACK_500 = f"Slack {POST} failed: fatal_error"
SLACK_LATE = f"Slack ({POST}) did not answer in time"

COMMAND_ROWS = {
    "kubernetes-409-once": CommandRow(_kube_fail(409, 1), attempts=1, patches=2),
    "kubernetes-500-twice-then-ok": CommandRow(_kube_fail(500, 2), attempts=3, patches=3,
                                               retried_because=KUBE_500),
    "kubernetes-500-until-the-retries-run-out": CommandRow(
        _kube_fail(500, 100), attempts=6, patches=6, retried_because=KUBE_500, applied=False),
    # The write landed and its answer was lost: read back at once, it shows the weights as
    # asked — the job goes on as written, with no retry and nothing written again.
    "kubernetes-write-landed-its-answer-lost": CommandRow(_kube_lost_answer, attempts=1,
                                                          patches=1),
    "kubernetes-write-stalled-past-the-timeout": CommandRow(
        _kube_stall, attempts=2, patches=2,
        retried_because="the Kubernetes API did not answer in time (about VirtualService "
                        f"production/{SERVICE})"),
    "slack-429-retry-after-on-the-root": CommandRow(
        _slack_429(ROOT), attempts=2, patches=1, retried_because=SLACK_429,
        waits_at_least=RETRY_AFTER_S - 1),
    "slack-429-retry-after-on-the-reply": CommandRow(
        _slack_429(REPLY), attempts=2, patches=1, retried_because=SLACK_429,
        waits_at_least=RETRY_AFTER_S - 1),
    "slack-500-on-the-root": CommandRow(_slack_500(ROOT), attempts=2, patches=1,
                                        retried_because=SLACK_500),
    "slack-500-on-the-reply": CommandRow(_slack_500(REPLY), attempts=2, patches=1,
                                         retried_because=SLACK_500),
    "slack-timeout-on-the-root": CommandRow(_slack_late(ROOT), attempts=2, patches=1,
                                            retried_because=SLACK_LATE),
    "slack-500-after-storing-the-root": CommandRow(
        lambda rig: rig.slack_fault_on_post(ROOT, Fault(500, "fatal_error", after_serving=True)),
        attempts=2, patches=1, retried_because=SLACK_500),
    # Slack kept "Weights applied" but its answer was lost: the retry finds it in the thread
    # (conversations.replies, by the key in its metadata) and does not say it twice.
    "slack-timeout-on-the-reply": CommandRow(_slack_late(REPLY), attempts=2, patches=1,
                                             retried_because=SLACK_LATE),
    "slack-500-after-storing-the-reply": CommandRow(
        lambda rig: rig.slack_fault_on_post(REPLY, Fault(500, "fatal_error", after_serving=True)),
        attempts=2, patches=1, retried_because=SLACK_500),
    # The audit entry is written without its link; the job is done at its first attempt.
    "slack-permalink-answered-without-the-link": CommandRow(
        lambda rig: rig.slack_answer_without("chat.getPermalink", "permalink"),
        attempts=1, patches=1),
}


@pytest.fixture
def rig(emulated_mesh: EmulatedMesh, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    made = Rig(emulated_mesh, monkeypatch)
    yield made
    for cleanup in made.cleanups:
        cleanup()


@pytest.mark.parametrize("row", COMMAND_ROWS.values(), ids=COMMAND_ROWS.keys())
def test_a_canary_through_the_fault(rig: Rig, row: CommandRow,
                                    caplog: pytest.LogCaptureFixture) -> None:
    mesh = rig.mesh
    assert mesh.weights(SERVICE) == as_dict(BEFORE)
    row.inject(rig)
    patches = rig.count_patches()
    request = slash(mesh, COMMAND)
    with caplog.at_level(logging.WARNING, logger="meshbot.jobs"):
        attempts, waits = run_to_the_end(rig)
    settle(mesh)

    # The row met the fault it names, and meshbot retried as it should.
    assert (attempts, patches[0]) == (row.attempts, row.patches)
    retries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("will retry")]
    assert len(retries) == row.attempts - 1, retries
    assert all(r.endswith(": " + row.retried_because) for r in retries), retries
    if row.waits_at_least:
        assert waits and max(waits) >= row.waits_at_least, waits
    texts, private = thread_texts(mesh), told(mesh, request)
    assert_in_words([*texts, *private, row.retried_because])
    root, replies = texts[0], texts[1:]
    assert SERVICE in root and f"<@{OPERATOR}>" in root
    assert "stable 100→90 / canary 0→10" in root
    applied = [t for t in replies if "Weights applied" in t]
    if row.applied:
        assert_end_state(mesh, APPLIED, Phase.PROGRESSING)
        assert len(applied) == 1 and "stable 90 / canary 10" in applied[0], texts
        assert private == []
        assert_audit(mesh, request, "done", BEFORE, APPLIED)
        assert [e.request_id for e in audit_of(mesh)] == [request.id]
    else:
        assert_end_state(mesh, BEFORE, Phase.ROLLED_BACK)
        assert applied == [], texts
        [settled] = [t for t in replies if "ended without writing its weights" in t]
        assert "stable 100 / canary 0" in settled
        [gave_up] = private
        assert f"gave up after {row.attempts} attempts" in gave_up and "500" in gave_up
        # Failed: it claims no change — before and after, where recorded, are the mesh as it
        # was and is (stable 100 / canary 0).
        [failed] = [e for e in audit_of(mesh) if e.request_id == request.id]
        assert (failed.actor, failed.action, failed.outcome) == (OPERATOR, "canary", "failed")
        assert {failed.before, failed.after} <= {None, str(BEFORE)}, failed
        assert str(Weights(**mesh.weights(SERVICE))) == str(BEFORE)
        [reconciled] = [e for e in audit_of(mesh) if e.request_id != request.id]
        assert (reconciled.actor, reconciled.action, reconciled.outcome) == \
            ("meshbot", "reconcile", "done")
        assert reconciled.after == str(Weights(**mesh.weights(SERVICE)))


# --- the Prometheus rows: the analysis tick of a running canary ----------------------------------


@contextmanager
def prometheus_down() -> Iterator[str]:
    yield f"http://127.0.0.1:{free_port()}"  # nothing listens: the connection is refused


@contextmanager
def prometheus_slow() -> Iterator[str]:
    """A listener that takes connections and never answers (the kernel accepts them)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@dataclass(frozen=True)
class TickRow:
    prometheus: Callable[[], AbstractContextManager[str]]
    words: str  # how the thread says what Prometheus did


TICK_ROWS = {
    "prometheus-down": TickRow(prometheus_down, "refused the connection"),
    "prometheus-slow-past-the-timeout": TickRow(
        prometheus_slow, f"did not answer within {PROMETHEUS_TIMEOUT_S:g}s"),
}


@pytest.mark.parametrize("row", TICK_ROWS.values(), ids=TICK_ROWS.keys())
def test_a_running_canary_through_the_fault(rig: Rig, row: TickRow) -> None:
    mesh = rig.mesh
    request = slash(mesh, COMMAND)
    assert run_to_the_end(rig)[0] == 1
    ctx = context.current()
    started = ctx.store.get(SERVICE)
    assert started is not None and started.phase is Phase.PROGRESSING
    before = thread_texts(mesh)

    with row.prometheus() as url, MetricsSource(url, timeout=PROMETHEUS_TIMEOUT_S,
                                                scrape_interval=1.0) as source:
        report = tick(ctx, source, now=started.next_check_at)  # its check is due
    settle(mesh)

    assert report.due == 1 and report.prometheus_error is not None
    assert_end_state(mesh, APPLIED, Phase.HOLDING)  # no data is never healthy: held
    texts = thread_texts(mesh)
    assert_in_words([*texts, report.prometheus_error])
    new = texts[len(before):]
    [held] = [t for t in new if "Holding" in t]
    assert "Prometheus unreachable" in held and row.words in held, held
    assert not any("Weights applied" in t or "Step" in t for t in new), new
    assert told(mesh, request) == []
    # The hold changed nothing in the mesh: the canary's own entry is still the only one.
    assert_audit(mesh, request, "done", BEFORE, APPLIED)
    assert [e.request_id for e in audit_of(mesh)] == [request.id]
