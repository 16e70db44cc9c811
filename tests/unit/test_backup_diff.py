"""What a backup keeps and how a restore's diff reads (pure: no Redis, no cluster)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from jobs.domain.backup_diff import Backup, Change, clean, diff, field_differences, restored_body
from meshbot.errors import MeshInvalid


def vs(name: str, weights: tuple[int, int] = (100, 0), **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "production", **meta},
        "spec": {"hosts": [name], "http": [{"route": [
            {"destination": {"host": name, "subset": "stable"}, "weight": weights[0]},
            {"destination": {"host": name, "subset": "canary"}, "weight": weights[1]},
        ]}]},
    }


LIVE_META: dict[str, Any] = {
    "resourceVersion": "42", "uid": "u-1", "creationTimestamp": "2024-01-01T00:00:00Z",
    "generation": 3, "managedFields": [{"manager": "kubectl"}]}


def test_clean_strips_what_the_server_sets_and_keeps_the_rest() -> None:
    live = vs("payment-service", labels={"team": "pay"}, annotations={"note": "x"}, **LIVE_META)
    live["status"] = {"conditions": []}
    kept = clean(live)
    assert kept["metadata"] == {"name": "payment-service", "namespace": "production",
                                "labels": {"team": "pay"}, "annotations": {"note": "x"}}
    assert "status" not in kept
    assert kept["spec"] == live["spec"]
    assert live["metadata"]["uid"] == "u-1"  # the input is not changed


def test_diff_names_created_changed_and_unchanged_objects() -> None:
    saved = [clean(vs("a")), clean(vs("b")), clean(vs("c"))]
    live = [vs("a", **LIVE_META), vs("b", (90, 10), **LIVE_META)]
    result = {(d.name, d.change) for d in diff(saved, live)}
    assert result == {("a", Change.UNCHANGED), ("b", Change.CHANGED), ("c", Change.CREATED)}


def test_changed_fields_are_dotted_paths() -> None:
    saved = clean(vs("b"))
    live = vs("b", (90, 10), labels={"extra": "1"}, **LIVE_META)
    live["spec"]["http"][0]["timeout"] = "5s"
    [only] = diff([saved], [live])
    assert only.change is Change.CHANGED
    assert set(only.fields) == {
        "metadata.labels.extra",
        "spec.http[0].route[0].weight",
        "spec.http[0].route[1].weight",
        "spec.http[0].timeout",
    }


def test_server_set_metadata_alone_is_no_change() -> None:
    [only] = diff([clean(vs("a"))], [vs("a", **LIVE_META)])
    assert only.change is Change.UNCHANGED and only.fields == ()


def test_list_of_other_length_is_one_difference() -> None:
    assert field_differences({"x": [1, 2]}, {"x": [1]}) == ["x"]
    assert field_differences([1], [1]) == []


def test_gateways_and_authorization_policies_are_not_restorable() -> None:
    gateway = {"kind": "Gateway", "metadata": {"name": "gw"}, "spec": {"servers": []}}
    policy = {"kind": "AuthorizationPolicy", "metadata": {"name": "ap"}, "spec": {}}
    result = {d.kind: d.restorable for d in diff([gateway, policy, clean(vs("a"))], [])}
    assert result == {"Gateway": False, "AuthorizationPolicy": False, "VirtualService": True}


def test_restored_body_is_conditional_on_the_live_version() -> None:
    saved = clean(vs("a"))
    body = restored_body(saved, vs("a", (50, 50), **LIVE_META))
    assert body["metadata"]["resourceVersion"] == "42"
    assert body["spec"] == saved["spec"]
    assert "resourceVersion" not in restored_body(saved, None)["metadata"]


def test_counts_list_every_kind() -> None:
    backup = Backup(id="b", namespace="production", created_at=0.0, user="U1", request_id="r",
                    objects=(clean(vs("a")), clean(vs("b"))))
    assert backup.counts() == {"VirtualService": 2, "DestinationRule": 0, "Gateway": 0,
                               "PeerAuthentication": 0, "AuthorizationPolicy": 0}


def test_diff_order_follows_kinds_then_names() -> None:
    dr = {"kind": "DestinationRule", "metadata": {"name": "a"}, "spec": {}}
    saved = [dr, clean(vs("z")), clean(vs("b"))]
    assert [(d.kind, d.name) for d in diff(copy.deepcopy(saved), [])] == [
        ("VirtualService", "b"), ("VirtualService", "z"), ("DestinationRule", "a")]


def test_a_live_object_without_resource_version_is_a_meshbot_error_not_a_key_error() -> None:
    live = vs("a", (50, 50))
    live["metadata"].pop("resourceVersion", None)
    with pytest.raises(MeshInvalid, match=r"VirtualService production/a as .* no metadata\.re"):
        restored_body(clean(vs("a")), live)
