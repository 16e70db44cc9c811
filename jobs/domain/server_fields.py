"""Fields meshbot reads from what the Kubernetes API answered and cannot do without.

A real API server always sets them, but a stand-in, a proxy or a future API version may not;
their absence is a meshbot error that says which field of which object was missing, never a
``KeyError`` (a stand-in without ``resourceVersion`` once crashed meshbot that way).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshbot.errors import MeshInvalid


def resource_version(obj: Mapping[str, Any], what: str) -> str:
    """``metadata.resourceVersion``: every write meshbot makes is conditional on it."""
    version = (obj.get("metadata") or {}).get("resourceVersion")
    if not isinstance(version, str) or not version:
        raise MeshInvalid(
            f"{what} as the Kubernetes API returned it has no metadata.resourceVersion; "
            "meshbot writes only conditionally on it, so it changed nothing"
        )
    return version
