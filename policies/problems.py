"""Turn pydantic's validation errors into ``PolicyProblem``s: a dotted path, what, and the fix.

pydantic says what is wrong; an operator editing YAML also needs where (``services.x.tier``,
not a tuple) and what to write instead, which comes from the error's ``fix`` context when a
validator supplied one, else from the schema (known keys, the field's description).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from meshbot.errors import PolicyProblem

Loc = Sequence[int | str]
SCHEMA_HINT = "see `meshbot policy schema` for the expected shape"


def dotted(loc: Loc) -> str:
    """``("roles", "operators", 1)`` -> ``roles.operators[1]``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            rest = [arg for arg in get_args(annotation) if arg is not type(None)]
            annotation = rest[0] if len(rest) == 1 else Any
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the value at ``loc``, if one does."""
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if _is_model(current):
            fields: dict[str, FieldInfo] = current.model_fields
            if not isinstance(part, str) or part not in fields:
                return None
            current = fields[part].annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif get_origin(current) is list:
            current = get_args(current)[0]
        else:
            return None
    current = _unwrap(current)
    return current if _is_model(current) else None


def _field_at(root: type[BaseModel], loc: Loc) -> FieldInfo | None:
    """The field at ``loc``, or the nearest enclosing one for a list item or a mapping value."""
    for end in range(len(loc), max(len(loc) - 3, 0), -1):
        name = loc[end - 1]
        parent = _model_at(root, loc[: end - 1]) if isinstance(name, str) else None
        if parent is not None and isinstance(name, str) and name in parent.model_fields:
            return parent.model_fields[name]
    return None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_key(root: type[BaseModel], loc: Loc) -> PolicyProblem:
    key = str(loc[-1])
    parent = _model_at(root, loc[:-1])
    known = sorted(parent.model_fields) if parent is not None else []
    close = difflib.get_close_matches(key, known, n=1)
    fix = f"did you mean `{close[0]}`? " if close else ""
    fix += f"known keys here: {', '.join(known)}" if known else "remove it"
    return PolicyProblem(path=dotted(loc), problem=f"unknown key `{key}`", fix=fix)


def _one(root: type[BaseModel], error: ErrorDetails, prefix: Loc) -> PolicyProblem:
    raw = tuple(error["loc"])
    kind = error["type"]
    # pydantic marks a bad mapping key by appending "[key]"; a key literally named "[key]"
    # can only be unknown, and an unknown key's error never carries the marker.
    is_key = kind != "extra_forbidden" and len(raw) > 1 and raw[-1] == "[key]"
    loc = tuple(prefix) + (raw[:-1] if is_key else raw)
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return _unknown_key(root, loc)
    field = _field_at(root, loc)
    description = field.description if field is not None else None
    if kind == "missing":
        name = loc[-1] if loc else "value"
        fix = f"add `{name}`" + (f": {description}" if description else "")
        return PolicyProblem(path=dotted(loc), problem="required key is missing", fix=fix)
    problem = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    if kind != "policy_value" and not isinstance(value, dict | list):
        problem += f" (got {_shown(value)})"
    if is_key:
        problem = f"bad key: {problem}"
    if isinstance(ctx.get("fix"), str):
        fix = str(ctx["fix"])
    elif description:
        fix = f"expected {description}"
    else:
        fix = SCHEMA_HINT
    return PolicyProblem(path=dotted(loc), problem=problem, fix=fix)


def from_validation_error(
    error: ValidationError, root: type[BaseModel], prefix: Loc = ()
) -> list[PolicyProblem]:
    """One problem per pydantic error, in file order, duplicates dropped."""
    problems: list[PolicyProblem] = []
    for detail in error.errors(include_url=False):
        problem = _one(root, detail, prefix)
        if problem not in problems:
            problems.append(problem)
    return problems
