"""The ``meshbot`` command line as an operator runs it: a separate process, its exit code and
what it prints. ``meshbot rollback`` is the way out when Slack is down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from jobs.adapters.audit import AuditLog
from meshbot.settings import packaged_default_policy
from playground.redis_server import free_port
from tests.fixtures.meshbot import CHANNEL, CONTRACT_POLICY, Mesh

GROUP, VERSION, NS, SERVICE = "networking.istio.io", "v1beta1", "production", "payment-service"
CONSOLE_SCRIPT = Path(sys.executable).parent / "meshbot"


def meshbot(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None,
            console_script: bool = False) -> subprocess.CompletedProcess[str]:
    command: Sequence[str] = (
        [str(CONSOLE_SCRIPT), *args] if console_script
        else [sys.executable, "-m", "meshbot.cli", *args]
    )
    return subprocess.run(command, env={**os.environ, **(env or {})}, cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


# --- meshbot policy check / schema ------------------------------------------------------------


def test_policy_check_accepts_the_contract_example() -> None:
    result = meshbot("policy", "check", str(CONTRACT_POLICY))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_policy_check_accepts_the_packaged_default_from_anywhere(tmp_path: Path) -> None:
    result = meshbot("policy", "check", str(packaged_default_policy()), cwd=tmp_path,
                     console_script=True)
    assert result.returncode == 0, result.stderr


BROKEN_SHAPE = """\
version: 1
roles:
  operators: [U0OPERATOR1]
channels: [C0MESHOPS]
defaults:
  namespace: production
  analysis: {interval: 30s, failure_threshold: 0, steps: [5, 10], no_data: hold}
  slo: {success_rate: 199.9, latency_p99_ms: 100, min_request_rate: 1.0}
tiers:
  critical: {approvals: {promote: 0}}
permissions:
  canary: [operators]
services:
  payment-service: {tier: critical}
  Payment_Service: {tier: critical}
"""

BROKEN_REFERENCES = """\
version: 1
roles:
  operators: [U0OPERATOR1]
channels: [C0MESHOPS]
defaults:
  namespace: production
  analysis: {interval: 30s, failure_threshold: 3, steps: [5, 10], no_data: hold}
  slo: {success_rate: 99.9, latency_p99_ms: 100, min_request_rate: 1.0}
tiers:
  critical: {approvals: {promote: 0}}
permissions:
  canary: [operatorz]
services:
  payment-service: {tier: platinum}
"""


def problem_lines(stderr: str) -> dict[str, str]:
    """Dotted path → the rest of its line, for every problem ``policy check`` printed."""
    lines = [line.strip() for line in stderr.splitlines()[1:] if line.strip()]
    return {line.split(":", 1)[0]: line.split(":", 1)[1] for line in lines}


@pytest.mark.parametrize(("text", "expected"), [
    (BROKEN_SHAPE, {  # dotted path: (what is wrong, the fix)
        "defaults.analysis.failure_threshold": ("greater than or equal to 1", "failed checks"),
        "defaults.slo.success_rate": ("less than or equal to 100", "5xx"),
        "services.Payment_Service": ("DNS-1123", "lower-case letters"),
    }),
    (BROKEN_REFERENCES, {
        "services.payment-service.tier": ("`platinum` is not defined", "critical"),
        "permissions.canary[0]": ("`operatorz` is not defined", "`operators`"),
    }),
])
def test_policy_check_names_every_problem_with_its_path_and_fix(
        tmp_path: Path, text: str, expected: dict[str, tuple[str, str]]) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    result = meshbot("policy", "check", str(path))
    assert result.returncode == 1
    assert result.stdout == ""  # a broken policy is never reported as valid
    problems = problem_lines(result.stderr)
    assert set(problems) == set(expected), result.stderr
    for where, (wrong, fix) in expected.items():
        problem, sep, how = problems[where].partition(" — ")
        assert sep, f"no fix given for {where}: {problems[where]}"
        assert wrong in problem, (where, problem)
        assert fix in how, (where, how)


def test_policy_check_reports_shape_and_reference_problems_in_one_run(tmp_path: Path) -> None:
    """An operator repairs the file in one pass (policies/loader.py promises every problem)."""
    path = tmp_path / "policy.yaml"
    # BROKEN_REFERENCES with a shape problem too: `defaults` is missing.
    path.write_text(BROKEN_REFERENCES.replace("defaults:", "default_settings:"))
    result = meshbot("policy", "check", str(path))
    assert result.returncode == 1
    problems = problem_lines(result.stderr)
    assert {"defaults", "services.payment-service.tier", "permissions.canary[0]"} <= set(
        problems), result.stderr


def test_policy_check_of_a_missing_file_fails_and_says_so(tmp_path: Path) -> None:
    result = meshbot("policy", "check", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert "does not exist" in result.stderr


def test_policy_schema_prints_the_json_schema() -> None:
    result = meshbot("policy", "schema")
    assert result.returncode == 0, result.stderr
    schema: dict[str, Any] = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["type"] == "object"
    for key in ("version", "roles", "channels", "defaults", "tiers", "permissions", "approve",
                "services"):
        assert key in schema["properties"], key


# --- meshbot rollback (from a shell, e.g. kubectl exec) -----------------------------------------


def at_canary(mesh: Mesh, percent: int) -> None:
    def split(vs: dict[str, Any]) -> None:
        for destination in vs["spec"]["http"][0]["route"]:
            stable = destination["destination"]["subset"] == "stable"
            destination["weight"] = 100 - percent if stable else percent

    mesh.cluster.change(GROUP, VERSION, "virtualservices", NS, SERVICE, split)
    assert mesh.weights(SERVICE) == {"stable": 100 - percent, "canary": percent}


def test_rollback_from_a_shell_restores_stable_and_is_audited(mesh: Mesh) -> None:
    at_canary(mesh, 25)
    result = meshbot("rollback", SERVICE, "--actor", "U0OPERATOR1", env=mesh.env,
                     console_script=True)
    assert result.returncode == 0, result.stderr
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    entry = AuditLog(mesh.redis).last(SERVICE, 1)[0]
    assert (entry.action, entry.outcome, entry.actor) == ("rollback", "done", "U0OPERATOR1")
    assert entry.before == "stable 75 / canary 25" and entry.after == "stable 100 / canary 0"
    # Slack was up: the team sees it in the service's channel.
    texts = [m.text for m in mesh.slack.messages(CHANNEL)]
    assert any("Rollback" in t and SERVICE in t for t in texts), texts
    assert any("stable 100 / canary 0" in t for t in texts), texts


def test_rollback_from_a_shell_works_when_slack_is_down(mesh: Mesh) -> None:
    at_canary(mesh, 10)
    closed = f"http://127.0.0.1:{free_port()}/api/"  # nothing listens there
    result = meshbot("rollback", SERVICE, env={**mesh.env, "SLACK_API_URL": closed})
    assert result.returncode == 0, result.stderr
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    entry = AuditLog(mesh.redis).last(SERVICE, 1)[0]
    assert (entry.action, entry.outcome) == ("rollback", "done")
    assert entry.actor.startswith("shell:")  # who ran it, from the shell's login
    assert entry.after == "stable 100 / canary 0"
    assert mesh.slack.calls() == []  # the stand-in was not the one asked


def test_rollback_from_a_shell_of_an_unknown_service_fails(mesh: Mesh) -> None:
    before = mesh.cluster.get(GROUP, VERSION, "virtualservices", NS, SERVICE)
    result = meshbot("rollback", "billing-service", env=mesh.env)
    assert result.returncode == 1
    assert "billing-service" in result.stderr and SERVICE in result.stderr
    assert mesh.cluster.get(GROUP, VERSION, "virtualservices", NS, SERVICE) == before
    assert AuditLog(mesh.redis).last(None, 1) == []
