"""A plan says, field by field, what a command would write (meshbot.plan, rendering.plan)."""

from __future__ import annotations

from typing import Any

from meshbot.plan import ABSENT, Action, FieldChange, ObjectChange, Plan, merge_patch
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


def test_added_and_removed_fields_show_as_none_leaf_by_leaf() -> None:
    before = _vs(100, 0)
    after = _vs(100, 0)
    after["spec"]["http"][0]["mirror"] = {"host": "payment-service", "subset": "canary"}
    after["metadata"]["labels"] = {"team": "pay"}
    fields = _change(before, after).fields
    assert fields == (FieldChange("metadata.labels.team", ABSENT, "pay"),
                      FieldChange("spec.http[0].mirror.host", ABSENT, "payment-service"),
                      FieldChange("spec.http[0].mirror.subset", ABSENT, "canary"))
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


def test_a_route_inserted_before_the_others_is_one_added_item() -> None:
    before = _vs(100, 0)
    after = _vs(100, 0)
    header = {"name": "meshbot-ab", "route": [{"destination": {"subset": "canary"}}]}
    after["spec"]["http"].insert(0, header)
    assert _change(before, after).fields == (
        FieldChange("spec.http[0].name", ABSENT, "meshbot-ab"),
        FieldChange("spec.http[0].route[0].destination.subset", ABSENT, "canary"))
    assert [f.path for f in _change(after, before).fields] == [
        "spec.http[0].name", "spec.http[0].route[0].destination.subset"]


def test_merge_patch_is_the_api_servers() -> None:
    obj: dict[str, Any] = {"metadata": {"labels": {"a": "1", "b": "2"}},
                           "spec": {"http": [1, 2], "x": 1}}
    patch: dict[str, Any] = {"metadata": {"labels": {"a": None, "c": "3"}},
                             "spec": {"http": [3]}}
    assert merge_patch(obj, patch) == {"metadata": {"labels": {"b": "2", "c": "3"}},
                                       "spec": {"http": [3], "x": 1}}
    assert obj["metadata"]["labels"] == {"a": "1", "b": "2"}  # the object read is kept
    change = ObjectChange.patched("Namespace", "", "prod", obj, patch)
    assert change.before is obj and change.action is Action.UPDATE
