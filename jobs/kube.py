"""meshbot's one Kubernetes adapter: everything above it sees meshbot errors, never the client's.

    404 → MeshNotFound    409 → MeshConflict    429, 5xx, timeouts, refused connections →
    MeshUnavailable       anything else (400, 401, 403, 422, bad configuration) → PermanentError

Configuration is the standard one: an explicit ``KUBECONFIG`` first, else the in-cluster service
account when running in a pod, else ``~/.kube/config``; optionally a named context. Calls use short
timeouts and no transport retries: retrying is the job's decision (``TemporaryError.delay``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from meshbot.errors import (
    GitOpsOwned,
    MeshConflict,
    MeshNotFound,
    MeshUnavailable,
    PermanentError,
)
from meshbot.settings import Settings

Obj = dict[str, Any]

# Labels or annotations by which GitOps controllers claim an object, and who claims it.
GITOPS_MARKERS = {
    "argocd.argoproj.io/instance": "Argo CD",
    "kustomize.toolkit.fluxcd.io/name": "Flux",
}
DEFAULT_TIMEOUT = (2.0, 5.0)  # (connect, read) seconds


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


def load_api_client(context: str | None = None) -> client.ApiClient:
    """An ApiClient configured the standard way (see the module docstring)."""
    configuration = client.Configuration()
    try:
        explicit = os.environ.get("KUBECONFIG")
        if not explicit and os.environ.get("KUBERNETES_SERVICE_HOST") and context is None:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        else:
            # Passed explicitly: the client reads KUBECONFIG once, when it is imported.
            path = explicit or str(Path("~/.kube/config").expanduser())
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=path, context=context, client_configuration=configuration
            )
    except (ConfigException, OSError) as exc:
        raise PermanentError(f"no usable Kubernetes configuration: {exc}") from exc
    configuration.retries = 0  # fail fast: the job decides about retrying
    return client.ApiClient(configuration)


class KubeClient:
    """The Kubernetes operations meshbot performs, each mapped onto meshbot's errors."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        settings: Settings | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        settings = settings or Settings()
        self._api_client = api_client
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._networking = settings.networking_group_version
        self._timeout = timeout

    @classmethod
    def from_environment(
        cls, context: str | None = None, *, settings: Settings | None = None
    ) -> KubeClient:
        return cls(load_api_client(context), settings=settings)

    def close(self) -> None:
        self._api_client.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- Istio networking (networking.istio.io) ---

    def get_virtual_service(self, namespace: str, name: str) -> Obj:
        return self._get_networking("virtualservices", "VirtualService", namespace, name)

    def get_destination_rule(self, namespace: str, name: str) -> Obj:
        return self._get_networking("destinationrules", "DestinationRule", namespace, name)

    def list_destination_rules(self, namespace: str) -> list[Obj]:
        group, version = self._networking
        with _translated(f"DestinationRules in namespace {namespace}"):
            listing = self._custom.list_namespaced_custom_object(
                group, version, namespace, "destinationrules", _request_timeout=self._timeout
            )
        return list(cast(Obj, listing).get("items") or [])

    def patch_virtual_service_route(
        self, namespace: str, name: str, http: list[Obj], resource_version: str
    ) -> Obj:
        """Replace ``spec.http``, only if the object is still at ``resource_version``.

        A JSON merge patch that carries metadata.resourceVersion is conditional on it: if anyone
        wrote the object since we read it, the API server answers 409 (MeshConflict).
        """
        group, version = self._networking
        body = {"metadata": {"resourceVersion": resource_version}, "spec": {"http": http}}
        with _translated(f"VirtualService {namespace}/{name}"):
            result = self._custom.patch_namespaced_custom_object(
                group,
                version,
                namespace,
                "virtualservices",
                name,
                body,
                _content_type="application/merge-patch+json",
                _request_timeout=self._timeout,
            )
        return cast(Obj, result)

    # --- workloads (core/v1) ---

    def count_ready_pods(self, namespace: str, labels: Mapping[str, str]) -> int:
        """Pods matching all ``labels`` whose Ready condition is True and that are not deleting."""
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        with _translated(f"pods {selector} in namespace {namespace}"):
            pods = self._core.list_namespaced_pod(
                namespace, label_selector=selector, _request_timeout=self._timeout
            )
        return sum(
            1
            for pod in pods.items
            if pod.metadata is None or pod.metadata.deletion_timestamp is None
            if any(
                c.type == "Ready" and c.status == "True"
                for c in (pod.status.conditions if pod.status else None) or []
            )
        )

    def _get_networking(self, plural: str, kind: str, namespace: str, name: str) -> Obj:
        group, version = self._networking
        with _translated(f"{kind} {namespace}/{name}"):
            result = self._custom.get_namespaced_custom_object(
                group, version, namespace, plural, name, _request_timeout=self._timeout
            )
        return cast(Obj, result)


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn the client's exceptions into meshbot's, naming the object concerned."""
    try:
        yield
    except ApiException as exc:
        raise _from_status(exc, what) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:  # timeouts, refused, reset
        raise MeshUnavailable(f"the Kubernetes API did not answer about {what}: {exc}") from exc


def _from_status(exc: ApiException, what: str) -> PermanentError | MeshUnavailable | MeshConflict:
    status = int(exc.status or 0)
    if status == 404:
        return MeshNotFound(f"{what} does not exist")
    if status == 409:
        return MeshConflict(f"{what} changed while meshbot was updating it", delay=0.2)
    if status == 429 or status >= 500:
        delay = _retry_after((exc.headers or {}).get("Retry-After"))
        return MeshUnavailable(f"the Kubernetes API answered {status} for {what}", delay=delay)
    return PermanentError(f"the Kubernetes API refused {what}: {status} {exc.reason}")


def _retry_after(value: str | None) -> float:
    try:
        return max(float(value or 1.0), 0.0)
    except ValueError:  # an HTTP date: not worth parsing for a hint
        return 1.0
