"""The soak's routes invariant: which services it holds to "no header route, no mirror", and
that it reports one left behind."""

from __future__ import annotations

from bench._soak_check import Violations, check_routes
from bench._soak_load import Sent
from jobs.adapters.audit import AuditEntry

ACCEPTED = '{"text": ":hourglass_flowing_sand: Accepted `/mesh ...` — working on it."}'


def sent(trigger: str, text: str, *, accepted: bool = True) -> Sent:
    return Sent(trigger, text, "U1", 0.0, 200, ACCEPTED if accepted else "Refused: …", "tok")


def ended(trigger: str, outcome: str) -> AuditEntry:
    return AuditEntry(actor="U1", action="x", target="svc", outcome=outcome, request_id=trigger)


CLEAN: dict[str, tuple[str | None, float | None]] = {"svc": (None, None)}
HEADER_LEFT: dict[str, tuple[str | None, float | None]] = {"svc": ("x-soak: yes", None)}


def test_a_header_route_left_after_the_last_rollback_ran_is_a_violation() -> None:
    v = Violations()
    checked = check_routes(v, ["svc"], [sent("t1", "ab svc header=x-soak:yes"),
                                        sent("t2", "rollback svc")],
                           [ended("t1", "overtaken"), ended("t2", "done")], HEADER_LEFT)
    assert checked == 1
    assert v.kinds() == {"routes": 1}
    assert "header route x-soak: yes" in v.lines[0][1] and "`rollback svc`" in v.lines[0][1]


def test_no_route_left_after_the_last_rollback_is_no_violation() -> None:
    v = Violations()
    checked = check_routes(v, ["svc"], [sent("t1", "mirror svc 20 confirm=yes"),
                                        sent("t2", "abort svc")],
                           [ended("t1", "done"), ended("t2", "done")], CLEAN)
    assert (checked, v.lines) == (1, [])


def test_a_route_edit_after_the_rollback_decides_instead() -> None:
    v = Violations()
    checked = check_routes(v, ["svc"], [sent("t1", "rollback svc"),
                                        sent("t2", "ab svc header=x-soak:yes")],
                           [ended("t1", "done"), ended("t2", "done")], HEADER_LEFT)
    assert (checked, v.lines) == (0, [])


def test_refusals_and_other_verbs_do_not_count_as_the_last_command() -> None:
    v = Violations()
    checked = check_routes(v, ["svc"], [sent("t1", "rollback svc"),
                                        sent("t2", "ab svc off"),  # refused: no header route
                                        sent("t3", "canary svc 10"),  # not about routes
                                        sent("t4", "mirror svc off", accepted=False)],
                           [ended("t1", "done"), ended("t2", "refused"), ended("t3", "done")],
                           HEADER_LEFT)
    assert checked == 1 and v.kinds() == {"routes": 1}


def test_a_rollback_that_did_not_run_decides_nothing() -> None:
    v = Violations()
    checked = check_routes(v, ["svc"], [sent("t1", "ab svc header=x-soak:yes"),
                                        sent("t2", "abort svc")],
                           [ended("t1", "done"), ended("t2", "failed")], HEADER_LEFT)
    assert (checked, v.lines) == (0, [])
