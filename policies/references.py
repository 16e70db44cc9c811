"""Reference checks (tiers and roles named where they are used) on the raw YAML data.

Run when the fields themselves did not validate, so that one `meshbot policy check` reports
a misspelt tier or role together with the shape errors instead of on a second run.
"""

from __future__ import annotations

from typing import Any

from meshbot.errors import PolicyProblem
from policies.policy import EVERYONE, _choose


def raw_reference_problems(data: dict[str, Any]) -> list[PolicyProblem]:
    problems: list[PolicyProblem] = []
    tiers, roles = data.get("tiers"), data.get("roles")
    services = data.get("services")
    if isinstance(tiers, dict) and isinstance(services, dict):
        for name, service in services.items():
            tier = service.get("tier") if isinstance(service, dict) else None
            if isinstance(tier, str) and tier not in tiers:
                problems.append(PolicyProblem(f"services.{name}.tier",
                                              f"tier `{tier}` is not defined",
                                              _choose(tier, map(str, tiers), "tiers")))
    if not isinstance(roles, dict):
        return problems
    known = [*map(str, roles), EVERYONE]
    used: list[tuple[str, Any]] = []
    permissions = data.get("permissions")
    if isinstance(permissions, dict):
        used += [(f"permissions.{verb}", entries) for verb, entries in permissions.items()]
    used.append(("approve", data.get("approve")))
    for path, entries in used:
        if not isinstance(entries, list):
            continue
        for index, entry in enumerate(entries):
            if isinstance(entry, str) and entry not in known:
                problems.append(PolicyProblem(f"{path}[{index}]", f"role `{entry}` is not defined",
                                              _choose(entry, known, "roles")))
    return problems
