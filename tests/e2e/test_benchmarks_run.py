"""The analysis benchmarks run end to end with tiny parameters and print their figure lines.

Only the printed structure is checked: a timing assertion would fail on a busy machine and say
nothing about meshbot. Each benchmark starts its own Redis, emulator, Slack stand-in and
Prometheus, as a person running it would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECONDS = r"\d+\.\d\d s"


def run_bench(module: str, *args: str, timeout: float) -> str:
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=dict(os.environ),
                            capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def line(output: str, pattern: str) -> str:
    found = [ln for ln in output.splitlines() if re.search(pattern, ln)]
    assert found, f"no line matching {pattern!r} in:\n{output}"
    return found[0]


@pytest.mark.timeout(150)
def test_rollback_time_prints_each_run_beside_the_floor() -> None:
    output = run_bench("bench.rollback_time", "--runs", "1", "--healthy", "1", timeout=140)
    run = line(output, r"^  run 1 ")
    assert re.search(rf"weights 100/0 +{SECONDS}", run), run  # the canary was rolled back
    assert re.search(rf"floor +{SECONDS}", run) and "in thread: yes" in run, run
    assert re.search(rf"median +{SECONDS}, max +{SECONDS} over 1/1 runs",
                     line(output, r"^rollback \(injection"))
    assert re.search(rf"median +{SECONDS}", line(output, r"^measured floor"))
    assert "7.00 s" in line(output, r"^aim \(failure_threshold \+ 1\)")
    assert re.search(r"1 run, \d ready to promote, \d rolled back \(aim 0\)",
                     line(output, r"^healthy rollouts"))


@pytest.mark.timeout(150)
def test_monitor_scale_prints_the_tick_beside_the_query_floor() -> None:
    output = run_bench("bench.monitor_scale", "--rollouts", "20", "--failing", "2", timeout=140)
    first = line(output, r"^tick 1 ")
    assert "20 due" in first and "'check_failed': 2" in first, first
    assert re.search(r"wall time +\d+\.\d ms += Prometheus", output)
    # rate, p99, error ratios and the comparison's counters, whatever the number of rollouts
    assert re.search(r"PromQL queries 4 .*Redis round trips \d+, commands \d+; Slack calls \d+",
                     output)
    assert re.search(r"the tick's 4 queries over plain HTTP: \d+\.\d ms", output)
    assert re.search(r"^tick 2 / its queries over plain HTTP: \d+\.\d\dx", output, re.MULTILINE)
    assert "'rolled_back': 2" in line(output, r"^rollouts after the ticks")
    assert re.search(r"^chat\.update: \d+ over both ticks", output, re.MULTILINE)


@pytest.mark.timeout(200)
def test_detection_prints_the_synthetic_and_the_end_to_end_comparison() -> None:
    output = run_bench("bench.detection", "--runs", "4", "--e2e-runs", "1", "--e2e-interval",
                       "2", timeout=190)
    assert re.search(r"severe: canary 20 % errors", output)
    assert "end to end (1 runs each)" in output
    for rule in ("sequential", "threshold rule"):
        assert re.search(rf"^  {rule} +decision median +{SECONDS}; weights median +{SECONDS}",
                         output, re.MULTILINE), output


@pytest.mark.timeout(150)
def test_ack_latency_prints_the_ack_beside_both_floors() -> None:
    output = run_bench("bench.ack_latency", "--requests", "20", "--concurrency", "5",
                       "--rounds", "1", timeout=140)
    for name in (r"GET /healthz \(no-op\)", r"signed POST \+ PING", r"/mesh canary \(ack\)"):
        assert "(20/20 x 200" in line(output, rf"^  {name} +p50"), output
    assert re.search(r"signed floor p99 +\d+\.\d ms, CPU \d\.\d\d ms; ack p99",
                     line(output, r"^    round 1:"))
    assert re.search(r"\d\.\d\d x +\(what no ack can skip\)",
                     line(output, r"CPU signed floor / no-op"))
    assert re.search(r"\d\.\d\d x +\(meshbot's own work\)", line(output, r"serve CPU ack / floor"))
    # The floor's commands are answered, never enqueued: every command serve acked is queued.
    assert "MISMATCH" not in line(output, r"^acks 200: 20/20 timed; jobs enqueued"), output
