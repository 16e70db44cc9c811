"""Read a policy from YAML text, a file, or the copy packaged with meshbot.

Whatever is wrong — YAML syntax, shape, cross-references, a missing file — comes out as one
``PolicyError`` listing every problem found with its dotted path and fix, so an operator can
repair the file in one pass instead of one error per run.
"""

from __future__ import annotations

import os
from importlib import resources
from typing import Any

import yaml
from pydantic import ValidationError

from meshbot.errors import PolicyError, PolicyProblem
from policies.policy import Policy
from policies.problems import from_validation_error
from policies.references import raw_reference_problems

DEFAULT_POLICY = "default.yaml"


def _yaml_problem(exc: yaml.YAMLError) -> PolicyProblem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return PolicyProblem(
        path="",
        problem=f"YAML syntax error{where}: {what}",
        fix=f"correct the YAML{where or ''} (indentation, a missing ':' or an unclosed quote "
        "or bracket are the usual causes)",
    )


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError([_yaml_problem(exc)], source) from exc
    except RecursionError as exc:
        problem = PolicyProblem("", "the YAML is nested too deeply", "flatten the document")
        raise PolicyError([problem], source) from exc


def load_policy_text(text: str, source: str = "policy") -> Policy:
    """Parse and validate policy YAML; ``source`` names it in the error message."""
    data = _parse_yaml(text, source)
    if data is None:
        raise PolicyError(
            [PolicyProblem("", "the policy is empty", "start from meshbot's default.yaml")],
            source,
        )
    if not isinstance(data, dict):
        raise PolicyError(
            [
                PolicyProblem(
                    "",
                    f"the policy must be a mapping of keys, not a {type(data).__name__}",
                    "begin the file with `version: 1` and the other top-level keys",
                )
            ],
            source,
        )
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = from_validation_error(exc, Policy)
        seen = {problem.path for problem in problems}
        problems += [p for p in raw_reference_problems(data) if p.path not in seen]
        raise PolicyError(problems, source) from exc
    except PolicyError as exc:
        # Cross-section checks raise without knowing the source; name it for the reader.
        raise PolicyError(exc.problems, source) from exc
    except RecursionError as exc:
        problem = PolicyProblem("", "the policy is nested too deeply", "flatten the document")
        raise PolicyError([problem], source) from exc


def _read(path: str | os.PathLike[str]) -> str:
    name = os.fspath(path)
    fix_path = "check the path (and MESHBOT_POLICY, which names the policy file)"
    try:
        with open(name, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError as exc:
        problem = PolicyProblem("", f"{name} does not exist", fix_path)
        raise PolicyError([problem], name) from exc
    except IsADirectoryError as exc:
        problem = PolicyProblem("", f"{name} is a directory", "name the YAML file itself")
        raise PolicyError([problem], name) from exc
    except UnicodeDecodeError as exc:
        problem = PolicyProblem("", f"{name} is not UTF-8 text", "save the file as UTF-8")
        raise PolicyError([problem], name) from exc
    except OSError as exc:
        problem = PolicyProblem("", f"{name} cannot be read: {exc.strerror}", fix_path)
        raise PolicyError([problem], name) from exc


def load_policy_file(path: str | os.PathLike[str]) -> Policy:
    """Read and validate the policy at ``path``."""
    return load_policy_text(_read(path), os.fspath(path))


def check_policy_file(path: str | os.PathLike[str]) -> list[PolicyProblem]:
    """Every problem in the policy at ``path``; an empty list means it is valid."""
    try:
        load_policy_file(path)
    except PolicyError as exc:
        return list(exc.problems)
    return []


def default_policy_text() -> str:
    """The ``default.yaml`` shipped inside the package (found through the package, not a path)."""
    return resources.files("policies").joinpath(DEFAULT_POLICY).read_text(encoding="utf-8")


def load_default_policy() -> Policy:
    return load_policy_text(default_policy_text(), f"policies/{DEFAULT_POLICY}")


def policy_json_schema() -> dict[str, Any]:
    """JSON Schema of the policy file, with a description and the default of every key."""
    schema = Policy.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
