"""``meshbot demo`` and ``bench.ack_latency`` run as a newcomer runs them: from a shell.

The demo is the README's first command, so it is checked the way a person reads it: it exits 0
and its output shows the canary's weights, then the rollback. The benchmark prints figures and
asserts nothing; here it only has to run and print them (no timing is asserted).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    # From the repository root, where `bench` lives (it is not part of the installed package).
    env = {k: v for k, v in os.environ.items() if k != "MESHBOT_POLICY"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_demo_shows_the_canary_and_the_rollback(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = run(["-m", "meshbot.cli", "demo", "--script", "--workdir", str(workdir)],
                 timeout=60)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr

    canary = out.index("/mesh canary payment-service 10")
    status = out.index("/mesh status payment-service")
    rollback = out.index("/mesh rollback payment-service")
    assert out.index("/mesh help") < canary < status < rollback
    # What the operator reads after the canary: the thread, and the weights in the cluster.
    assert "Weights applied" in out[canary:status]
    assert "in the cluster, after the canary: stable 90 / canary 10" in out[canary:status]
    assert "stable 90 / canary 10" in out[status:rollback]
    # After the rollback: reported in the same thread, and all traffic back on stable.
    assert "Rolled back" in out[rollback:]
    assert "in the cluster, after the rollback: stable 100 / canary 0" in out[rollback:]
    # Then the runbook's phase 2 as one thread: each pilot service injected, the thread says so.
    migrate = out.index("/mesh migrate production phase=2")
    assert rollback < migrate
    assert out[migrate:].count("migrated (phase 2)") == 3
    assert "Migration of `production`: done" in out[migrate:]
    assert "Deployments with the sidecar in the cluster now: health-checker-v1" in out[migrate:]
    assert "Demo finished" in out
    assert (workdir / "serve.log").exists() and (workdir / "worker.log").exists()


@pytest.mark.slow
def test_ack_latency_bench_runs_and_prints_its_figures() -> None:
    result = run(["-m", "bench.ack_latency", "--requests", "20", "--concurrency", "5",
                  "--rounds", "1"], timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    floor = next(line for line in lines if "GET /healthz" in line)
    acks = next(line for line in lines if "/mesh canary" in line)
    assert "p99" in floor and "p99" in acks
    assert "20/20 x 200" in acks
    assert any(line.startswith("acks 200: 20/20") for line in lines)
    # 20 untimed warm-up bursts + 20 timed bursts + 20 timed closed-loop, and one warm-up call
    # per client in each of the three runs
    assert "jobs enqueued: 75/75" in result.stdout
    assert "serve CPU ack / no-op" in result.stdout
    assert "cores" in result.stdout
