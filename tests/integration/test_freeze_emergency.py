"""The change freeze stops changes, not incident work: an emergency keeps its own approvals."""

from __future__ import annotations

from jobs.adapters.locks import Locks
from tests.fixtures.meshbot import Mesh
from tests.integration.chatops import ChatOps
from tests.integration.test_emergency import emergency_thread, ops, policy_path, start_emergency

__all__ = ["ops", "policy_path"]  # the emergency tests' fixtures: namespace, policy, approvers


def test_an_emergency_runs_during_a_change_freeze(ops: ChatOps, mesh: Mesh) -> None:
    ops.command("freeze on")
    ops.run()
    assert Locks(mesh.redis).freeze() is not None
    start_emergency(ops)
    thread = emergency_thread(ops)
    assert not any("frozen" in text for text in thread)
    assert any("PERMISSIVE" in text for text in thread)
