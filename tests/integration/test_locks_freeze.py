"""Per-service locks, `/mesh locks`, `/mesh unlock`, the change freeze and `/mesh audit`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.adapters.audit import AuditLog
from jobs.adapters.locks import Locks
from jobs.runtime import context
from jobs.runtime.reports import deliver_owed
from tests.fixtures.killed_worker import killed_while_saying
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh
from tests.fixtures.slack import fail_post_saying
from tests.integration.chatops import APPROVERS, ChatOps, write_policy
from tests.integration.test_worker_jobs import release_retries

A1, A2, _ = APPROVERS
SERVICE = "payment-service"
OTHER = "U0OPERATOR2"


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    return write_policy(tmp_path)


@pytest.fixture
def ops(mesh: Mesh) -> Iterator[ChatOps]:
    yield ChatOps.start(mesh)


def test_a_busy_service_says_who_what_and_since_when(ops: ChatOps, mesh: Mesh) -> None:
    ops.lock(SERVICE, OTHER, f"/mesh canary {SERVICE} 20", time.time() - 60)
    _, url = ops.command(f"canary {SERVICE} 10")
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    [told] = [t for t in ops.told(url) if "Refused" in t]
    assert f"busy: <@{OTHER}> `/mesh canary {SERVICE} 20` since <!date^" in told
    assert Locks(mesh.redis).get(SERVICE) is not None  # still the other worker's
    assert ops.roots() == []  # nothing announced, nothing changed


def test_rollback_wins_over_a_lock(ops: ChatOps, mesh: Mesh) -> None:
    ops.command(f"canary {SERVICE} 10")
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    assert Locks(mesh.redis).get(SERVICE) is None  # released when the work was done
    ops.lock(SERVICE, OTHER, f"/mesh promote {SERVICE}", time.time())
    ops.command(f"rollback {SERVICE}")
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}


def test_locks_lists_them_and_unlock_needs_approval(ops: ChatOps, mesh: Mesh) -> None:
    ops.lock(SERVICE, OTHER, f"/mesh canary {SERVICE} 20", time.time() - 3600)
    ops.command("locks", user="U0VIEWER")
    ops.run()
    listing = ops.roots()[-1]
    assert "*Locks*" in listing
    assert f"`{SERVICE}`: <@{OTHER}> `/mesh canary {SERVICE} 20` since <!date^" in listing

    ops.command(f"unlock {SERVICE}")
    ops.run()
    request = ops.approval()
    assert f"break the lock on `{SERVICE}` held by <@{OTHER}>" in request.text
    assert "Needs 1 approval " in request.text
    assert Locks(mesh.redis).get(SERVICE) is not None  # not before the approval
    assert ops.react(A1, request.ts) == "quorum"
    ops.run()
    assert Locks(mesh.redis).get(SERVICE) is None
    assert any(f"Lock on `{SERVICE}` broken by <@{OPERATOR}>, approved by <@{A1}>" in t
               for t in ops.roots())
    ops.command(f"canary {SERVICE} 10")
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}


def test_unlock_of_an_unlocked_service_asks_nobody(ops: ChatOps, mesh: Mesh) -> None:
    _, url = ops.command(f"unlock {SERVICE}")
    ops.run()
    assert any(f"`{SERVICE}` is not locked" in t for t in ops.told(url))
    assert ops.roots() == []


def test_freeze_blocks_changes_but_not_rollback(ops: ChatOps, mesh: Mesh) -> None:
    ops.command(f"canary {SERVICE} 10")
    ops.run()
    ops.command("freeze on")
    ops.run()
    assert f"*Change freeze on* by <@{OPERATOR}>" in ops.roots()[-1]
    roots = len(ops.roots())

    _, url = ops.command(f"canary {SERVICE} 20", user=OTHER)
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    assert any(f"changes are frozen: <@{OPERATOR}> froze them" in t
               for t in ops.told(url, user=OTHER))
    assert len(ops.roots()) == roots  # refused privately, nothing posted

    ops.command(f"rollback {SERVICE}", user=A2)
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}


def test_lifting_the_freeze_needs_approval(ops: ChatOps, mesh: Mesh) -> None:
    ops.command("freeze on")
    ops.run()
    ops.command("freeze off")
    ops.run()
    request = ops.approval()
    assert f"lift the change freeze set by <@{OPERATOR}>" in request.text
    assert Locks(mesh.redis).freeze() is not None
    _, url = ops.command(f"canary {SERVICE} 10", user=OTHER)
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}  # still frozen
    assert any("changes are frozen" in t for t in ops.told(url, user=OTHER))

    assert ops.react(OPERATOR, request.ts) == "requester"
    assert ops.react(A1, request.ts) == "quorum"
    ops.run()
    assert Locks(mesh.redis).freeze() is None
    assert any(f"*Change freeze lifted* by <@{OPERATOR}>, approved by <@{A1}>" in t
               for t in ops.roots())
    ops.command(f"canary {SERVICE} 10", user=OTHER)
    ops.run()
    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}


def test_audit_shows_who_what_when_before_after_and_links(ops: ChatOps, mesh: Mesh) -> None:
    ops.command(f"canary {SERVICE} 30")
    ops.run()
    ops.react(A1, ops.approval().ts)
    ops.react(A2, ops.approval().ts)
    ops.run()
    ops.command(f"rollback {SERVICE}")
    ops.run()
    ops.command(f"audit {SERVICE} 3", user="U0VIEWER")
    ops.run()
    text = ops.roots()[-1]
    lines = text.splitlines()
    assert lines[0].startswith(f":ledger: *Audit* `{SERVICE}`: last 3")
    assert len(lines) == 4
    rollback, done, approved = lines[1:]
    assert f"<@{OPERATOR}> rollback — done" in rollback
    assert "stable 70 / canary 30 → stable 100 / canary 0" in rollback
    assert f"<@{OPERATOR}> canary — done" in done
    assert "stable 100 / canary 0 → stable 70 / canary 30" in done
    assert f"approved by <@{A1}> and <@{A2}>" in done
    assert "<https://meshbot-playground.slack.com/archives/C0MESHOPS/p" in done
    assert f"<@{A2}> canary — approved" in approved
    assert "<!date^" in done
    assert CHANNEL in done


def _unlock(ops: ChatOps) -> None:
    ops.lock(SERVICE, OTHER, f"/mesh canary {SERVICE} 20", time.time() - 3600)
    ops.command(f"unlock {SERVICE}")
    ops.run()
    assert ops.react(A1, ops.approval().ts) == "quorum"


def _freeze_off(ops: ChatOps) -> None:
    ops.command("freeze on")
    ops.run()
    ops.command("freeze off")
    ops.run()
    assert ops.react(A1, ops.approval().ts) == "quorum"


# (the command's set-up up to its approval, the announcement Slack refuses, the audit's target,
#  meshbot's state after)
CONTROLS = {
    "unlock": (_unlock, f"Lock on `{SERVICE}` broken", SERVICE,
               lambda locks: locks.get(SERVICE) is None),
    "freeze on": (lambda ops: ops.command("freeze on"), "*Change freeze on*", "freeze",
                  lambda locks: locks.freeze() is not None),
    "freeze off": (_freeze_off, "*Change freeze lifted*", "freeze",
                   lambda locks: locks.freeze() is None),
}


@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_a_control_slack_refused_to_announce_is_announced_once_and_done(
        ops: ChatOps, mesh: Mesh, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Slack answers 500 to the announcement, said after the lock was broken or the freeze
    set or lifted: the job is not failed (its retry would find the lock or the freeze gone and
    refuse it: "not locked", "no freeze"); the channel hears it once when the ticker delivers
    what Slack is owed, and the audit says done, once."""
    set_up, words, target, after = CONTROLS[name]
    fail_post_saying(mesh.slack, monkeypatch, words)
    set_up(ops)
    ops.run()
    while release_retries(mesh.redis):  # RQ's retry, if any, as its time comes
        ops.run()
    assert after(Locks(mesh.redis))
    deliver_owed(context.current())  # the ticker's duty: what Slack is owed

    assert sum(words in t for t in ops.roots()) == 1, ops.roots()
    entries = [e for e in AuditLog(mesh.redis).last(target, 20)
               if e.action == name.split()[0] and e.outcome not in ("approval requested",
                                                                    "approved")]
    done = [e for e in entries if e.outcome == "done"]
    assert [e.outcome for e in entries].count("refused") == 0, entries
    assert len(done) == (2 if name == "freeze off" else 1), entries
    assert done[0].after == {"unlock": "unlocked", "freeze on": "frozen",
                             "freeze off": "off"}[name]


@pytest.mark.parametrize("name", ["unlock", "freeze off"])
def test_a_control_whose_worker_died_after_its_change_is_said_and_audited_once(
        ops: ChatOps, mesh: Mesh, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        name: str) -> None:
    """A real ``meshbot worker`` breaks the lock (lifts the freeze) and is SIGKILLed while its
    announcement is on the wire (held, then answered 500: never posted). The job taken over and
    run again finds the lock (the freeze) gone: it must say and audit what its first attempt
    removed, once, not refuse "not locked" ("no freeze") with the change never said."""
    set_up, words, target, after = CONTROLS[name]
    set_up(ops)  # up to the approval's quorum: the work is queued
    killed_while_saying(mesh, monkeypatch, tmp_path, words)
    assert after(Locks(mesh.redis))  # the change landed before the worker died
    ops.run()
    while release_retries(mesh.redis):
        ops.run()

    assert sum(words in t for t in ops.roots()) == 1, ops.roots()
    outcomes = [e.outcome for e in AuditLog(mesh.redis).last(target, 20)
                if e.action == name.split()[0]]
    assert "refused" not in outcomes, outcomes
    assert outcomes.count("done") == (2 if name == "freeze off" else 1), outcomes
    assert not [t for t in ops.mesh.slack.responses() if "not locked" in str(t.body)
                or "no change freeze" in str(t.body).lower()]


def test_a_second_freeze_on_is_refused_and_the_first_stays(ops: ChatOps, mesh: Mesh) -> None:
    ops.command("freeze on")
    ops.run()
    first = Locks(mesh.redis).freeze()
    assert first is not None and first.user == OPERATOR
    roots = len(ops.roots())

    _, url = ops.command("freeze on", user=OTHER)
    ops.run()
    assert any("The change freeze is already on: set by <@" + OPERATOR + ">" in t
               for t in ops.told(url, user=OTHER)), ops.told(url, user=OTHER)
    assert Locks(mesh.redis).freeze() == first  # unchanged: still the first one's
    assert len(ops.roots()) == roots  # nothing announced
    outcomes = [e.outcome for e in AuditLog(mesh.redis).last("freeze", 10)]
    assert outcomes == ["done"], outcomes  # the first freeze only: no second one recorded
