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
        return tuple(field_changes(_written(self.before), _written(self.after)))


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


def _written(obj: Mapping[str, Any] | None) -> Any:
    """What a writer controls: no status, no server-set metadata."""
    if obj is None:
        return ABSENT
    result = {k: v for k, v in obj.items() if k != "status"}
    meta = result.get("metadata")
    if isinstance(meta, Mapping):
        result["metadata"] = {k: v for k, v in meta.items()
                              if k not in SERVER_SET and v not in ({}, None)}
    return result


def field_changes(before: Any, after: Any, path: str = "") -> list[FieldChange]:
    """Every leaf that differs between ``before`` and ``after``, in a stable order. Lists of
    equal length are compared item by item; otherwise the whole list is one change."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        found: list[FieldChange] = []
        for key in sorted(set(before) | set(after), key=str):
            sub = f"{path}.{key}" if path else str(key)
            found += field_changes(before.get(key, ABSENT), after.get(key, ABSENT), sub)
        return found
    if (isinstance(before, Sequence) and isinstance(after, Sequence)
            and not isinstance(before, str) and not isinstance(after, str)
            and len(before) == len(after)):
        return [c for i, (a, b) in enumerate(zip(before, after, strict=True))
                for c in field_changes(a, b, f"{path}[{i}]")]
    return [] if before == after else [FieldChange(path or "(whole object)", before, after)]
