"""The Kubernetes calls of `/mesh migrate` that ``kube.py`` does not make: Deployments created
(a blue-green's green copy), deleted (its blue, after the cut-over) and patched conditionally
(injection and its undo), and a custom object read by name (Telemetry).

Through the Kubernetes adapter's REST layer and its error translation: callers see meshbot's
errors (403 names the verb and the resource, 409 is a retry), never the client's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobs.adapters.kube import KubeClient, Obj, api_path

APPS = "apis/apps/v1"


class KubeWorkloads:
    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube

    def create_deployment(self, namespace: str, body: Mapping[str, Any]) -> Obj:
        name = (body.get("metadata") or {}).get("name")
        return self._kube.call("create", f"Deployment {namespace}/{name}", "POST",
                               api_path(APPS, namespace, "deployments"), body=dict(body))

    def delete_deployment(self, namespace: str, name: str) -> None:
        self._kube.call("delete", f"Deployment {namespace}/{name}", "DELETE",
                        api_path(APPS, namespace, "deployments", name))

    def patch_deployment(self, namespace: str, name: str, patch: Mapping[str, Any],
                         resource_version: str) -> Obj:
        """A JSON merge patch, only if the Deployment is still at ``resource_version``."""
        body = {**patch, "metadata": {**(patch.get("metadata") or {}),
                                      "resourceVersion": resource_version}}
        return self._kube.call("patch", f"Deployment {namespace}/{name}", "PATCH",
                               api_path(APPS, namespace, "deployments", name), body=body,
                               content_type="application/merge-patch+json")

    def get_custom(self, group: str, version: str, plural: str, namespace: str,
                   name: str) -> Obj:
        return self._kube.call("get", f"{plural}.{group} {namespace}/{name}", "GET",
                               api_path(f"apis/{group}/{version}", namespace, plural, name))
