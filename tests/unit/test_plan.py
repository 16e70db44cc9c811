"""A plan says, field by field, what a command would write (``meshbot.plan``, ``rendering.plan``)."""

from __future__ import annotations

from typing import Any

from meshbot.plan import ABSENT, Action, FieldChange, ObjectChange, Plan
from rendering.plan import dry_run_reply, plan_block


def _vs(stable: int, canary: int, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "payment-service", "namespace": "payments", **meta},
        "spec": {"http": [{"route": [
            {"destination": {"host": "payment-service", "subset": "stable"}, "weight": stable},
            {"destination": {"host": "payment-service", "subset": "canary"}, "weight": canary},
        ]}]},
        "status": {"observedGeneration": 3},
    }


def _change(before: Any, after: Any) -> ObjectChange:
    return ObjectChange("VirtualService", "payments", "payment-service", before, after)


def test_a_weight_change_is_two_fields_before_and_after() -> None:
    change = _change(_vs(100, 0, resourceVersion="41"), _vs(90, 10, resourceVersion="42"))
    assert change.action is Action.UPDATE
    assert change.fields == (
        FieldChange("spec.http[0].route[0].weight", 100, 90),
        FieldChange("spec.http[0].route[1].weight", 0, 10),
    )


def test_server_set_metadata_and_status_are_not_changes() -> None:
    before = _vs(100, 0, resourceVersion="41", uid="a", generation=3)
    after = _vs(100, 0, resourceVersion="57", uid="a", generation=4)
    after["status"] = {"observedGeneration": 4}
    assert _change(before, after).action is Action.UNCHANGED


def test_added_and_removed_fields_show_as_none() -> None:
    before = _vs(100, 0)
    after = _vs(100, 0)
    after["spec"]["http"][0]["mirror"] = {"host": "payment-service", "subset": "canary"}
    after["metadata"]["labels"] = {"team": "pay"}
    fields = _change(before, after).fields
    assert FieldChange("metadata.labels", ABSENT,
                       {"team": "pay"}) in fields
    assert FieldChange("spec.http[0].mirror", ABSENT,
                       {"host": "payment-service", "subset": "canary"}) in fields
    assert _change(after, before).fields == tuple(
        FieldChange(f.path, f.after, f.before) for f in fields)


def test_create_and_delete() -> None:
    assert _change(None, _vs(100, 0)).action is Action.CREATE
    assert _change(_vs(100, 0), None).action is Action.DELETE


def test_plan_block_lists_only_what_changes() -> None:
    plan = Plan((_change(_vs(100, 0), _vs(90, 10)), _change(_vs(1, 2), _vs(1, 2))),
                ("watch the error rate for 5m",))
    text = plan_block(plan)
    assert "update VirtualService payments/payment-service" in text
    assert "spec.http[0].route[0].weight: 100 → 90" in text
    assert text.count("VirtualService") == 1
    assert "• watch the error rate for 5m" in text


def test_nothing_to_change_is_said() -> None:
    reply = dry_run_reply("/mesh canary payment-service 0 dry-run", Plan())
    assert "nothing was changed" in reply
    assert "No object would change." in reply


def test_a_long_plan_is_cut_inside_its_code_block() -> None:
    changes = tuple(_change(_vs(100, 0), _vs(90 - i % 50, 10 + i % 50)) for i in range(400))
    text = plan_block(Plan(changes))
    assert len(text) < 3500
    assert text.startswith("```") and text.endswith("```")
    assert "characters cut" in text
