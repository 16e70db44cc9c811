"""AuthorizationPolicies (security.istio.io) through the Kubernetes adapter's generic calls, so
their errors are meshbot's (403 names the verb and the resource, 409 is a retry, …).

Plain dicts in and out, the API's own JSON: the domain builds the bodies and the plans from the
very objects read and written here.
"""

from __future__ import annotations

from jobs.adapters.kube import KubeClient, Obj
from jobs.domain.authz import KIND, PLURAL


class AuthorizationPolicies:
    def __init__(self, kube: KubeClient, group_version: tuple[str, str]) -> None:
        self._kube = kube
        self._group, self._version = group_version

    @property
    def api_version(self) -> str:
        return f"{self._group}/{self._version}"

    def list(self, namespace: str) -> list[Obj]:
        """Every AuthorizationPolicy of ``namespace``, meshbot's or not (the cut of a change
        depends on all of them)."""
        found = self._kube.list_custom(self._group, self._version, PLURAL, namespace)
        for item in found:  # a list's items carry no kind on some servers
            item.setdefault("kind", KIND)
            item.setdefault("apiVersion", self.api_version)
        return sorted(found, key=lambda p: str(p["metadata"]["name"]))

    def create(self, namespace: str, body: Obj) -> Obj:
        return self._kube.create_custom(self._group, self._version, PLURAL, namespace, body)

    def patch(self, namespace: str, name: str, patch: Obj) -> Obj:
        """A merge patch; conditional when ``patch`` carries metadata.resourceVersion."""
        return self._kube.patch_custom(self._group, self._version, PLURAL, namespace, name,
                                       patch)

    def delete(self, namespace: str, name: str, resource_version: str) -> None:
        """Only the policy as it was read (its plan is what the approvers saw)."""
        self._kube.delete_custom(self._group, self._version, PLURAL, namespace, name,
                                 resource_version)
