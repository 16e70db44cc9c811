"""The analysis's next step of a healthy rollout, refused for good by the Kubernetes API (403):
said once in the thread, audited once, never tried again on its own; the rollout is paused at
its first step, where the VirtualService still is. Measured by the real Prometheus scraping the
traffic generator (no errors); the checks run as the ticker runs them, in real time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobs.adapters.prometheus import MetricsSource
from jobs.runtime import context
from jobs.runtime.analysis import tick
from meshbot.commands import Command, Verb
from playground.prometheus_server import PrometheusServer
from playground.redis_server import free_port
from playground.traffic import TrafficGenerator
from tests.fixtures.live import eventually
from tests.fixtures.meshbot import EmulatedMesh
from tests.integration.test_unwritable_weights import (
    assert_said_audited_paused,
    refuse_writes,
    rollout,
    ticks_go_on,
    vs_writes,
)
from tests.integration.test_worker_jobs import SERVICE, submit_command

INTERVAL_S = 3.0  # a few scrapes of the canary's traffic between the baseline and the check


@pytest.fixture
def no_prometheus() -> Iterator[MetricsSource]:
    """The later ticks': nothing to measure by, nothing to act on but the reconcile's."""
    with MetricsSource(f"http://127.0.0.1:{free_port()}", timeout=0.5,
                       scrape_interval=1.0) as source:
        yield source


def test_the_analysis_meeting_a_refused_step_says_it_once_and_stops(
        emulated_mesh: EmulatedMesh, prometheus: PrometheusServer, traffic: TrafficGenerator,
        no_prometheus: MetricsSource) -> None:
    mesh = emulated_mesh
    canary = submit_command(mesh, Command(verb=Verb.ROLLOUT, target=SERVICE, steps=(5, 10),
                                          interval_s=INTERVAL_S))
    mesh.run_jobs()
    assert mesh.weights(SERVICE) == {"stable": 95, "canary": 5}
    refuse_writes(mesh, 403)
    before = vs_writes(mesh)
    ctx = context.current()
    with MetricsSource(prometheus.url, timeout=2.0, scrape_interval=1.0) as source:
        def stepped() -> bool:  # the ticker's ticks until the first check passed
            tick(ctx, source)
            return vs_writes(mesh) > before  # the next step's write was sent
        eventually(stepped, 30, "the first check passed and the step was tried")
    tried = vs_writes(mesh) - before
    assert tried >= 1
    ticks_go_on(mesh, no_prometheus, rollout().history[-1].at)

    assert vs_writes(mesh) - before == tried
    assert_said_audited_paused(mesh, canary, 403, "advance", canary_weight=5)
    assert rollout().step_index == 0
