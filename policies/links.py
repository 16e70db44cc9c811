"""Links to the observability stack (Grafana, Kiali, Jaeger, Loki) for a service and a time range.

The policy gives URL templates with placeholders; meshbot fills them for every rollout thread,
alert thread and status reply, so a reader is one click from the dashboards of what they read.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from urllib.parse import quote

PLACEHOLDERS = ("service", "namespace", "cluster", "start_ms", "end_ms")
LINK_NAMES = ("grafana", "kiali", "jaeger", "loki")


def placeholders(template: str) -> list[str]:
    """The names between braces in ``template`` (``ValueError`` if the braces are unbalanced)."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def unknown_placeholders(template: str) -> list[str]:
    return [name for name in placeholders(template) if name not in PLACEHOLDERS]


def expand(templates: Mapping[str, str | None], *, service: str, namespace: str,
           start: float, end: float, cluster: str = "") -> dict[str, str]:
    """Each configured link filled in (values URL-quoted), in the order of ``LINK_NAMES``."""
    values = {"service": quote(service, safe=""), "namespace": quote(namespace, safe=""),
              "cluster": quote(cluster, safe=""), "start_ms": str(int(start * 1000)),
              "end_ms": str(int(end * 1000))}
    filled: dict[str, str] = {}
    for name in LINK_NAMES:
        template = templates.get(name)
        if template:
            filled[name] = template.format_map(values)
    return filled
