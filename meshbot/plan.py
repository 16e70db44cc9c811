"""A plan: the objects a command would write, each before → after, field by field.

A dry run shows it and writes nothing; an approval request shows it so approvers approve what
will be written. Handlers build it from the very bodies they would send to the API server, so
the plan and the change cannot differ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

ABSENT: Any = None  # a field, or an object, that is not there

# Set by the API server, not by a writer: never part of what a command changes.
SERVER_SET = frozenset({"resourceVersion", "uid", "creationTimestamp", "generation",
                        "managedFields", "selfLink", "deletionTimestamp",
                        "deletionGracePeriodSeconds"})


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class FieldChange:
    path: str  # dotted, list items by index: ``spec.http[0].route[1].weight``
    before: Any  # ``ABSENT`` when the field is added
    after: Any  # ``ABSENT`` when the field is removed


@dataclass(frozen=True, slots=True)
class ObjectChange:
    kind: str
    namespace: str
    name: str
    before: Mapping[str, Any] | None  # None: the object does not exist yet
    after: Mapping[str, Any] | None  # None: the object is deleted

    @property
    def action(self) -> Action:
        if self.before is None and self.after is None:
            return Action.UNCHANGED
        if self.before is None:
            return Action.CREATE
        if self.after is None:
            return Action.DELETE
        return Action.UPDATE if self.fields else Action.UNCHANGED

    @property
    def fields(self) -> tuple[FieldChange, ...]:
        return tuple(field_changes(written(self.before), written(self.after), by_item=True))

    @classmethod
    def patched(cls, kind: str, namespace: str, name: str, obj: Mapping[str, Any],
                patch: Mapping[str, Any]) -> ObjectChange:
        """``obj`` and what a JSON merge patch of it with ``patch`` leaves: the writer sends
        this very ``patch``, so the plan is what the API server will hold."""
        return cls(kind, namespace, name, obj, merge_patch(obj, patch))


@dataclass(frozen=True, slots=True)
class Plan:
    """What one command would do: its object changes, and words for steps that are not an
    object write (e.g. "watch the error rate for 5m")."""

    changes: tuple[ObjectChange, ...] = ()
    steps: tuple[str, ...] = field(default=())

    @property
    def effective(self) -> tuple[ObjectChange, ...]:
        return tuple(c for c in self.changes if c.action is not Action.UNCHANGED)

    def __add__(self, other: Plan) -> Plan:
        return Plan(self.changes + other.changes, self.steps + other.steps)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies ``application/merge-patch+json``: objects merge key
    by key, ``None`` removes a key, anything else (lists too) replaces."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def written(obj: Mapping[str, Any] | None) -> Any:
    """What a writer controls: no status, no server-set metadata (``ABSENT`` for no object)."""
    if obj is None:
        return ABSENT
    result = {k: v for k, v in obj.items() if k != "status"}
    meta = result.get("metadata")
    if isinstance(meta, Mapping):
        result["metadata"] = {k: v for k, v in meta.items()
                              if k not in SERVER_SET and v not in ({}, None)}
    return result


def field_changes(before: Any, after: Any, path: str = "", *,
                  by_item: bool = False) -> list[FieldChange]:
    """Every leaf that differs between ``before`` and ``after``, in a stable order. Lists of
    equal length are compared item by item; otherwise the whole list is one change, unless
    ``by_item``: then the items both keep at the start and the end are matched, and each one
    added or removed in between is a change of its own (a route inserted before the others
    is one added item, not a new ``http`` list), and an object added or removed is told by
    its leaves."""
    if by_item and before is ABSENT and _container(after):
        before = {} if isinstance(after, Mapping) else []
    if by_item and after is ABSENT and _container(before):
        after = {} if isinstance(before, Mapping) else []
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        found: list[FieldChange] = []
        for key in sorted(set(before) | set(after), key=str):
            sub = f"{path}.{key}" if path else str(key)
            found += field_changes(before.get(key, ABSENT), after.get(key, ABSENT), sub,
                                   by_item=by_item)
        return found
    if _sequence(before) and _sequence(after) and len(before) == len(after):
        return [c for i, (a, b) in enumerate(zip(before, after, strict=True))
                for c in field_changes(a, b, f"{path}[{i}]", by_item=by_item)]
    if by_item and _sequence(before) and _sequence(after):
        return _item_changes(before, after, path)
    return [] if before == after else [FieldChange(path or "(whole object)", before, after)]


def _container(value: Any) -> bool:
    return bool(value) and (isinstance(value, Mapping) or _sequence(value))


def _sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _item_changes(before: Sequence[Any], after: Sequence[Any], path: str) -> list[FieldChange]:
    start = 0
    while start < min(len(before), len(after)) and before[start] == after[start]:
        start += 1
    end = 0
    while (end < min(len(before), len(after)) - start
           and before[len(before) - 1 - end] == after[len(after) - 1 - end]):
        end += 1
    old, new = before[start:len(before) - end], after[start:len(after) - end]
    found: list[FieldChange] = []
    for i in range(max(len(old), len(new))):
        sub = f"{path}[{start + i}]"
        found += field_changes(old[i] if i < len(old) else ABSENT,
                               new[i] if i < len(new) else ABSENT, sub, by_item=True)
    return found
