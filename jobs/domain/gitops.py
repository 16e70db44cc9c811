"""meshbot's one Kubernetes adapter: everything above it sees meshbot errors, never the client's.

    404 → MeshNotFound    409 → MeshConflict    429, 5xx, timeouts, refused connections →
    MeshUnavailable       anything else (400, 401, 403, 422, bad configuration) → PermanentError

Configuration is the standard one: an explicit ``KUBECONFIG`` first, else the in-cluster service
account when running in a pod, else ``~/.kube/config``; optionally a named context. Calls use short
timeouts and no transport retries: retrying is the job's decision (``TemporaryError.delay``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshbot.errors import (
    GitOpsOwned,
)

# Labels or annotations by which GitOps controllers claim an object, and who claims it.
GITOPS_MARKERS = {
    "argocd.argoproj.io/instance": "Argo CD",
    "kustomize.toolkit.fluxcd.io/name": "Flux",
}

def gitops_owner(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """(controller, application) when a GitOps controller owns the object, else None."""
    meta = obj.get("metadata") or {}
    for where in ("labels", "annotations"):
        marks = meta.get(where) or {}
        for key, controller in GITOPS_MARKERS.items():
            if marks.get(key):
                return controller, str(marks[key])
    return None

def ensure_not_gitops_owned(obj: Mapping[str, Any], *, allowed: bool = False) -> None:
    """Refuse (GitOpsOwned) to change an object a GitOps controller owns, unless allowed."""
    owner = gitops_owner(obj)
    if owner is None or allowed:
        return
    controller, app = owner
    meta = obj.get("metadata") or {}
    raise GitOpsOwned(
        f"{obj.get('kind', 'object')} {meta.get('namespace')}/{meta.get('name')} is managed by "
        f"{controller} (application {app!r}): {controller} would revert a change made here. "
        f"Change it in Git, or allow GitOps-owned objects for this service in the policy."
    )
