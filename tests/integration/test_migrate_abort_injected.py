"""``/mesh migrate … abort`` after a pilot's sidecar injection was written but before its rollout
completed: the injection is undone, so every service is either migrated or as it was."""

from __future__ import annotations

import copy

from jobs.domain.migration import Status
from playground.sample_mesh import TIERS
from tests.fixtures.meshbot import OPERATOR, Mesh
from tests.integration.chatops import ChatOps
from tests.integration.test_migrate import (  # noqa: F401 (fixtures)
    INJECT,
    NS,
    drive,
    ops,
    policy_path,
    snapshot,
    template_annotations,
    thread_of,
)


def test_abort_after_an_injection_puts_the_pod_template_back(ops: ChatOps,  # noqa: F811
                                                             mesh: Mesh) -> None:
    before = copy.deepcopy(snapshot(mesh))
    first = sorted(TIERS["pilot"])[0]
    ops.command(f"migrate {NS} phase=2")
    ops.run()
    # No controller: the first pilot's rollout stays incomplete once its injection is written.
    drive(ops, lambda w: template_annotations(mesh, f"{first}-v1") == {INJECT: "true"},
          controller=False)

    ops.command(f"migrate {NS} abort")
    ops.run()
    ended = drive(ops, lambda w: not w.status.active, controller=False)

    assert ended.status is Status.ABORTED, ended
    for version in ("v1", "v2"):
        assert template_annotations(mesh, f"{first}-{version}") == {}
    assert snapshot(mesh) == before  # nothing half-done, nothing else touched
    assert any(f"<@{OPERATOR}>" in t and "abort" in t.lower() for t in thread_of(ops)), \
        thread_of(ops)
