"""The Kubernetes API's ``Retry-After`` is honoured: a 429 (or a 503) that asks for N seconds is
not retried inside them, though RQ's own schedule would retry after 1 s; in seconds or as an
HTTP date.

The emulator answers the canary's VirtualService write once with the status and the header, and
records when each request reached it; the retry is released as the ticker releases it (polled
until it has run, within a deadline), and the two writes' arrival times are compared."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable

import pytest

from jobs.adapters.audit import AuditLog
from jobs.runtime import api
from jobs.runtime.scheduled import release_due
from meshbot.commands import Verb
from meshbot.settings import Settings
from playground.kube_emulator import Received
from tests.fixtures.live import eventually
from tests.fixtures.meshbot import EmulatedMesh
from tests.integration.test_worker_jobs import SERVICE, submit, thread_texts, told

RETRY_AFTER_S = 3  # longer than RQ's first retry interval (1 s): the header decides


def writes(mesh: EmulatedMesh) -> tuple[Received, ...]:
    return mesh.cluster.received(method="PATCH", plural="virtualservices", name=SERVICE)


def http_date(seconds_from_now: float) -> str:
    """An HTTP date that far ahead (whole seconds: it may say up to 1 s less)."""
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


@pytest.mark.parametrize(("status", "header"), [
    (429, lambda: RETRY_AFTER_S),
    (503, lambda: RETRY_AFTER_S),
    (429, lambda: http_date(RETRY_AFTER_S + 1)),
], ids=["429-seconds", "503-seconds", "429-http-date"])
def test_a_retry_after_from_the_kubernetes_api_is_waited_for(
        emulated_mesh: EmulatedMesh, status: int, header: Callable[[], float | str]) -> None:
    mesh = emulated_mesh
    mesh.cluster.fail(status, method="PATCH", plural="virtualservices", name=SERVICE,
                      retry_after=header())
    request = submit(mesh, Verb.CANARY, 10)
    mesh.run_jobs()  # the first attempt meets the fault; RQ schedules its retry
    assert len(writes(mesh)) == 1
    queues = api.queue_names(Settings().queue_name)

    def retried() -> bool:  # the ticker's release of due retries, and a worker running them
        if release_due(mesh.redis, queues):
            mesh.run_jobs()
        return len(writes(mesh)) >= 2

    eventually(retried, RETRY_AFTER_S + 6, "the canary's write was retried")
    first, second = writes(mesh)[:2]
    assert second.at - first.at >= RETRY_AFTER_S, (first, second)

    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    applied = [t for t in thread_texts(mesh) if "Weights applied" in t]
    assert len(applied) == 1 and "stable 90 / canary 10" in applied[0]
    assert told(mesh, request) == []
    outcomes = [e.outcome for e in AuditLog(mesh.redis).last(SERVICE, 20)
                if e.request_id == request.id]
    assert outcomes == ["done"]
