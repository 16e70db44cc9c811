"""The soak's short version: a minute of commands and faults on the real processes, then every
invariant checked (bench/soak.py says which). Seeded, so a failure replays with the same seed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEED = "20261201"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_short_soak_loses_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--seed", SEED, "--duration", "60",
         "--commands", "60", "--faults", "15", "--services", "20"],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=230,
        check=False)
    output = result.stdout
    assert result.returncode == 0, output + result.stderr[-4000:]
    assert re.search(r"^violations: 0\b", output, re.MULTILINE), output
    assert re.search(rf"^seed {SEED}: passed with 0 violations", output, re.MULTILINE), output
    assert re.search(r"^faults injected: \d+ — ", output, re.MULTILINE), output
    assert re.search(r"= \d+\.\d\d commands/s; during the load", output), output
