"""`… dry-run` of every verb that changes the mesh, as a person types it: the plan comes back to
the caller, field by field, and nothing on the real kube-apiserver changes (no lock is taken, no
approval asked); then the same command without dry-run, after which the API server holds the
plan's ``after`` in every field the plan named. The plan the test compares is computed again by
the handler's own dry run (``common.plan_of``), and must be the one the caller was shown."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.grammar import parse
from jobs.adapters.audit import AuditLog
from jobs.adapters.locks import Locks
from jobs.adapters.rollout_store import RolloutStore
from jobs.domain.rollout import Phase
from jobs.runtime import context
from jobs.runtime.handlers.common import plan_of
from jobs.runtime.tasks import HANDLERS
from meshbot.commands import Request
from meshbot.plan import Action, Plan, field_changes, written
from rendering.plan import plan_block
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh
from tests.integration.chatops import ChatOps
from tests.integration.test_runbook_routing import write_runbook_policy

NS = "production"
KINDS = {
    "VirtualService": ("networking.istio.io", "v1beta1", "virtualservices"),
    "DestinationRule": ("networking.istio.io", "v1beta1", "destinationrules"),
    "PeerAuthentication": ("security.istio.io", "v1beta1", "peerauthentications"),
    "Deployment": ("apps", "v1", "deployments"),
    "Namespace": ("", "v1", "namespaces"),
}


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    return write_runbook_policy(tmp_path)


@pytest.fixture
def ops(mesh: Mesh) -> Iterator[ChatOps]:
    yield ChatOps.start(mesh)


# --- helpers (the runbook tests use them too) -------------------------------------------------


def snapshot(mesh: Mesh, *namespaces: str) -> dict[tuple[str, str, str], tuple[str, Any]]:
    """Every object a verb may write, by (kind, namespace, name): its resourceVersion and body."""
    found: dict[tuple[str, str, str], tuple[str, Any]] = {}
    for kind, (group, version, plural) in KINDS.items():
        for namespace in (None,) if kind == "Namespace" else namespaces or (NS, "istio-system"):
            for obj in mesh.cluster.list(group, version, plural, namespace):
                meta = obj["metadata"]
                found[(kind, meta.get("namespace", ""), meta["name"])] = (
                    meta["resourceVersion"], written(obj))
    return found


def live(mesh: Mesh, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    group, version, plural = KINDS[kind]
    try:
        return mesh.cluster.get(group, version, plural, namespace or None, name)
    except KeyError:
        return None


def plan_now(text: str, user: str = OPERATOR) -> Plan:
    """What the handler's dry run of ``text`` computes now (nothing is told or written)."""
    command = parse(text)
    request = Request(id=f"plan-{time.time_ns()}", command=command, user=user, channel=CHANNEL)
    return plan_of(HANDLERS[command.verb], context.current(), request)


def dry_run(ops: ChatOps, text: str, *namespaces: str) -> tuple[Plan, str]:
    """``text dry-run`` through the bot and a worker: nothing changed on the API server, no
    approval asked, the caller shown the plan (the one the handler computes); (plan, reply)."""
    mesh = ops.mesh
    assert isinstance(mesh, Mesh)
    before = snapshot(mesh, *namespaces)
    ack, url = ops.command(f"{text} dry-run")
    assert "working out the plan" in ack, ack
    ops.run()
    assert snapshot(mesh, *namespaces) == before
    assert not [r for r in ops.roots() if "Approval needed" in r]
    replies = [t for t in ops.told(url) if "Dry run of" in t]
    assert len(replies) == 1, ops.told(url)
    plan = plan_now(text)
    assert plan_block(plan) in replies[0], (plan_block(plan), replies[0])
    assert f"`/mesh {' '.join(text.split()[:2])}" in replies[0]
    target = parse(text).target
    assert "dry-run" in [e.outcome for e in AuditLog(mesh.redis).last(target or "", 20)]
    return plan, replies[0]


def _under(path: str, planned: str) -> bool:
    return path == planned or path.startswith((planned + ".", planned + "["))


def assert_holds(mesh: Mesh, plan: Plan) -> None:
    """The API server holds the plan's ``after`` in every field the plan changes."""
    assert plan.effective, "a plan that changes nothing proves nothing here"
    for change in plan.effective:
        now = live(mesh, change.kind, change.namespace, change.name)
        where = f"{change.kind} {change.namespace}/{change.name}"
        if change.action is Action.DELETE:
            assert now is None, f"{where} still there"
            continue
        assert now is not None, f"{where} missing"
        if change.action is Action.CREATE:
            assert written(now)["spec"] == written(change.after)["spec"], where
            continue
        differ = [c.path for c in field_changes(written(change.after), written(now), by_item=True)]
        for planned in (f.path for f in change.fields):
            wrong = [p for p in differ if _under(p, planned) or _under(planned, p)]
            assert not wrong, f"{where}: {wrong} differ from the plan"


def run(ops: ChatOps, text: str) -> list[str]:
    """The command for real (approvals, if any, are the caller's business); what it was told."""
    ack, url = ops.command(text)
    assert "Refused" not in ack, ack
    ops.run()
    return ops.told(url)


def weights(mesh: Mesh, service: str) -> dict[str, int]:
    return mesh.weights(service)


# --- the split: canary, rollout, pause, resume, promote, rollback, abort ------------------------


def test_canary_start_and_move_plan_the_split_they_then_write(ops: ChatOps, mesh: Mesh) -> None:
    service = "payment-service"
    ops.lock(service, "U0SOMEONE", "rollout", time.time())  # a dry run takes no lock
    plan, reply = dry_run(ops, f"canary {service} 10")
    assert "spec.http[0].route[0].weight: 100 → 90" in reply
    assert "spec.http[0].route[1].weight: 0 → 10" in reply
    assert "store the rollout and open its thread" in reply
    assert RolloutStore(mesh.redis).get(service) is None  # no rollout state stored
    assert not [r for r in ops.roots() if "*Canary*" in r]  # and no thread opened
    assert Locks(mesh.redis).get(service) is not None  # the other holder's, untouched
    Locks(mesh.redis).release(service, "other-worker")

    run(ops, f"canary {service} 10")
    assert_holds(mesh, plan)
    assert weights(mesh, service) == {"stable": 90, "canary": 10}

    plan, reply = dry_run(ops, f"canary {service} 20")
    assert "spec.http[0].route[0].weight: 90 → 80" in reply
    assert "moves 10% → 20%" in reply
    current = RolloutStore(mesh.redis).get(service)
    assert current is not None and current.weight == 10  # the dry run moved nothing
    run(ops, f"canary {service} 20")
    assert_holds(mesh, plan)


def test_rollout_pause_resume_and_abort_plans(ops: ChatOps, mesh: Mesh) -> None:
    service = "user-service"
    plan, reply = dry_run(ops, f"rollout {service} steps=5,50")
    assert "spec.http[0].route[1].weight: 0 → 5" in reply and "then 50%" in reply
    run(ops, f"rollout {service} steps=5,50")
    assert_holds(mesh, plan)

    plan, reply = dry_run(ops, f"pause {service}")
    assert plan.effective == () and "No object would change." in reply
    assert "progressing → paused, at 5%" in reply
    store = RolloutStore(mesh.redis)
    assert store.get(service) is not None and store.get(service).phase is Phase.PROGRESSING  # type: ignore[union-attr]
    run(ops, f"pause {service}")
    assert store.get(service).phase is Phase.PAUSED  # type: ignore[union-attr]

    _, reply = dry_run(ops, f"resume {service}")
    assert "paused → progressing" in reply
    assert store.get(service).phase is Phase.PAUSED  # type: ignore[union-attr]

    plan, reply = dry_run(ops, f"abort {service}")
    assert "spec.http[0].route[0].weight: 95 → 100" in reply
    assert "marked rolled back first" in reply
    assert store.get(service).phase is Phase.PAUSED  # type: ignore[union-attr]
    run(ops, f"abort {service}")
    assert_holds(mesh, plan)
    assert store.get(service).phase is Phase.ROLLED_BACK  # type: ignore[union-attr]


def test_promote_plans_all_traffic_to_the_canary(ops: ChatOps, mesh: Mesh) -> None:
    service = "logging-service"  # pilot: a promote needs no approval
    run(ops, f"rollout {service} steps=10")
    told = run(ops, f"promote {service} dry-run")  # no evidence yet: refused, as for real
    assert any("no SLO evidence to promote on yet" in t for t in told), told
    store = RolloutStore(mesh.redis)
    store.update(service, lambda r: r.model_copy(update={"phase": Phase.READY_TO_PROMOTE})
                 if r else None)
    plan, reply = dry_run(ops, f"promote {service}")
    assert "spec.http[0].route[0].weight: 90 → 0" in reply
    assert "subset `canary` becomes the live one" in reply
    assert store.get(service).phase is Phase.READY_TO_PROMOTE  # type: ignore[union-attr]
    run(ops, f"promote {service}")
    assert_holds(mesh, plan)
    assert weights(mesh, service) == {"stable": 0, "canary": 100}


def test_rollback_plans_the_split_and_the_extra_routes_as_one_change(
        ops: ChatOps, mesh: Mesh) -> None:
    service = "payment-service"
    run(ops, f"canary {service} 10")
    run(ops, f"ab {service} header=x-canary:true")
    plan, reply = dry_run(ops, f"rollback {service}")
    vs_changes = [c for c in plan.effective if c.name == service]
    assert len(vs_changes) == 1  # the two writes, planned as what the object ends as
    assert "update VirtualService production/payment-service" in reply
    assert any("meshbot-ab" in str(f.before) for f in vs_changes[0].fields)
    run(ops, f"rollback {service}")
    assert_holds(mesh, plan)
    assert weights(mesh, service) == {"stable": 100, "canary": 0}


# --- routing: ab, mirror ------------------------------------------------------------------------


def test_ab_and_mirror_on_and_off_plan_what_they_write(ops: ChatOps, mesh: Mesh) -> None:
    service = "logging-service"
    for text in (f"ab {service} header=x-canary:true", f"mirror {service} 20",
                 f"mirror {service} off", f"ab {service} off"):
        plan, reply = dry_run(ops, text)
        assert "update VirtualService production/logging-service" in reply, reply
        run(ops, text)
        assert_holds(mesh, plan)


def test_a_refused_dry_run_says_why_and_plans_nothing(ops: ChatOps, mesh: Mesh) -> None:
    told = run(ops, "ab logging-service off dry-run")  # no header route to remove
    assert any("header route" in t for t in told), told
    assert not [t for t in told if "Dry run of" in t]
