"""The ticker's own weight writes honour the Kubernetes API's ``Retry-After`` too: a rollback the
analysis decided, whose write is answered 429 (or 503) asking for 30 s, is written again by the
reconcile only once those 30 s are over, however often the ticker runs meanwhile; the
reconcile's own write meeting one waits the same way. Then it is written, said and audited once.

As in ``test_unwritable_weights``: Prometheus is not there (every check is "no data", and the
policy rolls back past a 1 s deadline); ticks run as the ticker runs them, their clock given."""

from __future__ import annotations

import pytest

from jobs.adapters.audit import AuditLog
from jobs.adapters.prometheus import MetricsSource
from jobs.domain.rollout import Phase
from jobs.runtime import context
from jobs.runtime.analysis import tick
from jobs.runtime.reconcile import GRACE_S, reconcile
from tests.fixtures.meshbot import EmulatedMesh
from tests.integration.test_unwritable_weights import (  # noqa: F401 (fixtures)
    a_running_canary,
    no_prometheus,
    policy_path,
    rollout,
    tick_until_rolled_back,
    vs_writes,
)
from tests.integration.test_worker_jobs import SERVICE, thread_texts

WAIT_S = 30  # far longer than the reconcile's grace and the ticker's interval


def ticks_within(source: MetricsSource, start: float, end: float) -> None:
    """The ticker's analysis and reconcile every second from ``start`` to ``end``."""
    ctx = context.current()
    at = start
    while at <= end:
        tick(ctx, source, now=at)
        reconcile(ctx, now=at)
        at += 1.0


def assert_rolled_back_once(mesh: EmulatedMesh) -> None:
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert rollout().phase is Phase.ROLLED_BACK
    entries = [e for e in AuditLog(mesh.redis).last(SERVICE, 50) if e.action == "reconcile"]
    assert [(e.outcome, e.after) for e in entries] == [("done", "stable 100 / canary 0")], entries
    said = [t for t in thread_texts(mesh) if "meshbot wrote them now" in t]
    assert len(said) == 1 and "stable 100 / canary 0" in said[0], thread_texts(mesh)


@pytest.mark.parametrize("status", [429, 503])
def test_the_analysis_rollback_told_to_wait_is_written_after_the_wait(
        emulated_mesh: EmulatedMesh, no_prometheus: MetricsSource,  # noqa: F811
        status: int) -> None:
    mesh = emulated_mesh
    a_running_canary(mesh)
    mesh.cluster.fail(status, method="PATCH", plural="virtualservices", name=SERVICE,
                      retry_after=WAIT_S)
    before = vs_writes(mesh)
    when = tick_until_rolled_back(mesh, no_prometheus)
    tried = vs_writes(mesh) - before
    assert tried == 1  # the rollback's write was sent, and told to wait
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}

    ticks_within(no_prometheus, when + 1, when + WAIT_S - 1)
    assert vs_writes(mesh) - before == tried, "written again inside the Retry-After"
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}

    ticks_within(no_prometheus, when + WAIT_S, when + WAIT_S + 1)
    assert vs_writes(mesh) - before > tried
    assert_rolled_back_once(mesh)


def test_the_reconciles_own_write_told_to_wait_is_written_after_the_wait(
        emulated_mesh: EmulatedMesh, no_prometheus: MetricsSource) -> None:  # noqa: F811
    mesh = emulated_mesh
    a_running_canary(mesh)
    # The analysis's rollback write meets a 500 without a wait (left to the reconcile); the
    # reconcile's first write is told to wait.
    mesh.cluster.fail(500, method="PATCH", plural="virtualservices", name=SERVICE)
    mesh.cluster.fail(429, method="PATCH", plural="virtualservices", name=SERVICE,
                      retry_after=WAIT_S)
    when = tick_until_rolled_back(mesh, no_prometheus)
    first = when + GRACE_S + 1
    before = vs_writes(mesh)
    reconcile(context.current(), now=first)
    assert vs_writes(mesh) - before == 1  # sent, and told to wait
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}

    ticks_within(no_prometheus, first + 1, first + WAIT_S - 1)
    assert vs_writes(mesh) - before == 1, "written again inside the Retry-After"

    ticks_within(no_prometheus, first + WAIT_S, first + WAIT_S + 1)
    assert vs_writes(mesh) - before == 2
    assert_rolled_back_once(mesh)
