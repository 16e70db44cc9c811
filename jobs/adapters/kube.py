"""meshbot's one Kubernetes adapter: everything above it sees meshbot errors, never the client's.

    403 → MeshForbidden ("meshbot is not allowed to <verb> <resource> (<object>)")
    404 → MeshNotFound    409 → MeshConflict    429, 5xx, timeouts, refused connections →
    MeshUnavailable       anything else (400, 401, 422, bad configuration) → PermanentError

Core, apps, policy and autoscaling objects are read and patched as plain JSON through the
client's REST layer, not its typed APIs: building ``CoreV1Api`` alone imports some 250 pydantic
models (about 20 MB per worker process) to produce objects meshbot turns straight back into
dicts. Istio objects go through ``CustomObjectsApi``, which is already untyped.

Configuration is the standard one: an explicit ``KUBECONFIG`` first, else the in-cluster service
account when running in a pod, else ``~/.kube/config``; optionally a named context. Calls use short
timeouts and no transport retries: retrying is the job's decision (``TemporaryError.delay``).
"""

from __future__ import annotations

import datetime
import email.utils
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from meshbot.errors import (
    MeshConflict,
    MeshForbidden,
    MeshNotFound,
    MeshUnavailable,
    PermanentError,
)
from meshbot.network_words import in_words
from meshbot.settings import Settings

log = logging.getLogger("meshbot.kube")

Obj = dict[str, Any]

DEFAULT_TIMEOUT = (2.0, 5.0)  # (connect, read) seconds

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # the pod-template stamp of a restart

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
        # The library's text (paths, YAML keys, a stack of causes) for the log; in words here.
        log.error("Kubernetes configuration not loaded: %s: %s", type(exc).__name__, exc)
        raise PermanentError(_config_in_words(explicit, context)) from exc
    configuration.retries = 0  # fail fast: the job decides about retrying
    return client.ApiClient(configuration)


def _config_in_words(explicit: str | None, context: str | None) -> str:
    """Why meshbot has no Kubernetes access, for whoever runs it (the detail is in the log)."""
    if not explicit and os.environ.get("KUBERNETES_SERVICE_HOST") and context is None:
        return ("meshbot could not load its Kubernetes configuration (the pod's service "
                "account): its token or CA certificate is missing or unreadable; meshbot's log "
                "has the detail")
    where = f"KUBECONFIG={explicit}" if explicit else "~/.kube/config, KUBECONFIG not set"
    which = f", context `{context}`" if context else ""
    return (f"meshbot could not load its Kubernetes configuration ({where}{which}): the file "
            "is missing, unreadable or not a kubeconfig"
            + (", or the context is not in it" if context else "")
            + "; meshbot's log has the detail")


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
        self._networking = settings.networking_group_version
        self._security = settings.security_group_version
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
        with _translated("list", f"DestinationRules in namespace {namespace}"):
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
        with _translated("patch", f"VirtualService {namespace}/{name}"):
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

    # --- runbook: routing, sidecars, mTLS ---
    # Each write is a JSON merge patch of only the fields meshbot owns, conditional on the
    # resourceVersion that was read (409 → MeshConflict), so nothing else is overwritten.

    def patch_destination_rule_tls_mode(
        self, namespace: str, name: str, mode: str, resource_version: str
    ) -> Obj:
        """Set ``spec.trafficPolicy.tls.mode`` and nothing else (merge patch merges the rest)."""
        group, version = self._networking
        body = {
            "metadata": {"resourceVersion": resource_version},
            "spec": {"trafficPolicy": {"tls": {"mode": mode}}},
        }
        with _translated("patch", f"DestinationRule {namespace}/{name}"):
            result = self._custom.patch_namespaced_custom_object(
                group, version, namespace, "destinationrules", name, body,
                _content_type="application/merge-patch+json", _request_timeout=self._timeout,
            )
        return cast(Obj, result)

    def get_peer_authentication(self, namespace: str, name: str) -> Obj:
        group, version = self._security
        with _translated("get", f"PeerAuthentication {namespace}/{name}"):
            result = self._custom.get_namespaced_custom_object(
                group, version, namespace, "peerauthentications", name,
                _request_timeout=self._timeout,
            )
        return cast(Obj, result)

    def create_peer_authentication(self, namespace: str, name: str, mode: str) -> Obj:
        """A namespace-wide PeerAuthentication (no selector) with ``spec.mtls.mode``."""
        group, version = self._security
        body = {
            "apiVersion": f"{group}/{version}",
            "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"mtls": {"mode": mode}},
        }
        with _translated("create", f"PeerAuthentication {namespace}/{name}"):
            result = self._custom.create_namespaced_custom_object(
                group, version, namespace, "peerauthentications", body,
                _request_timeout=self._timeout,
            )
        return cast(Obj, result)

    def set_peer_authentication_mode(
        self, namespace: str, name: str, mode: str, resource_version: str
    ) -> Obj:
        """Set ``spec.mtls.mode`` only (a selector or port-level settings stay as found)."""
        group, version = self._security
        body = {
            "metadata": {"resourceVersion": resource_version},
            "spec": {"mtls": {"mode": mode}},
        }
        with _translated("patch", f"PeerAuthentication {namespace}/{name}"):
            result = self._custom.patch_namespaced_custom_object(
                group, version, namespace, "peerauthentications", name, body,
                _content_type="application/merge-patch+json", _request_timeout=self._timeout,
            )
        return cast(Obj, result)

    def find_deployments(self, namespace: str, labels: Mapping[str, str]) -> list[Obj]:
        """Deployments whose own labels match all ``labels`` (a label selector)."""
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        with _translated("list", f"Deployments {selector} in namespace {namespace}"):
            listing = self._rest("GET", api_path("apis/apps/v1", namespace, "deployments"),
                                 query={"labelSelector": selector})
        return _items(listing)

    def annotate_pod_template(
        self, namespace: str, name: str, annotations: Mapping[str, str], resource_version: str
    ) -> Obj:
        """Set pod-template annotations; a changed template is what rolls the pods."""
        body = {
            "metadata": {"resourceVersion": resource_version},
            "spec": {"template": {"metadata": {"annotations": dict(annotations)}}},
        }
        with _translated("patch", f"Deployment {namespace}/{name}"):
            return self._merge_patch(api_path("apis/apps/v1", namespace, "deployments", name), body)

    # --- workloads (core/v1) ---

    def count_ready_pods(self, namespace: str, labels: Mapping[str, str]) -> int:
        """Pods matching all ``labels`` whose Ready condition is True and that are not deleting."""
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        with _translated("list", f"pods {selector} in namespace {namespace}"):
            pods = _items(self._rest("GET", api_path("api/v1", namespace, "pods"),
                                     query={"labelSelector": selector}))
        return sum(
            1
            for pod in pods
            if (pod.get("metadata") or {}).get("deletionTimestamp") is None
            if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (pod.get("status") or {}).get("conditions") or []
            )
        )

    def _get_networking(self, plural: str, kind: str, namespace: str, name: str) -> Obj:
        group, version = self._networking
        with _translated("get", f"{kind} {namespace}/{name}"):
            result = self._custom.get_namespaced_custom_object(
                group, version, namespace, plural, name, _request_timeout=self._timeout
            )
        return cast(Obj, result)

    # --- runbook: backup, restore, emergency, readiness ---
    # Plain dicts in and out (the API's own JSON shape), so jobs compare and store them as-is.

    def list_custom(self, group: str, version: str, plural: str, namespace: str) -> list[Obj]:
        """Objects of one Istio kind in ``namespace``; [] when the API does not serve the kind
        (its CRD is not installed: then there is nothing of it to back up or restore)."""
        try:
            with _translated("list", f"{plural}.{group} in namespace {namespace}"):
                listing = self._custom.list_namespaced_custom_object(
                    group, version, namespace, plural, _request_timeout=self._timeout
                )
        except MeshNotFound:
            return []
        return list(cast(Obj, listing).get("items") or [])

    def create_custom(self, group: str, version: str, plural: str, namespace: str,
                      body: Obj) -> Obj:
        name = (body.get("metadata") or {}).get("name")
        with _translated("create", f"{plural}.{group} {namespace}/{name}"):
            result = self._custom.create_namespaced_custom_object(
                group, version, namespace, plural, body, _request_timeout=self._timeout
            )
        return cast(Obj, result)

    def replace_custom(self, group: str, version: str, plural: str, namespace: str, name: str,
                       body: Obj) -> Obj:
        """PUT the whole object; conditional on ``body``'s metadata.resourceVersion (409)."""
        with _translated("update", f"{plural}.{group} {namespace}/{name}"):
            result = self._custom.replace_namespaced_custom_object(
                group, version, namespace, plural, name, body, _request_timeout=self._timeout
            )
        return cast(Obj, result)

    def patch_custom(self, group: str, version: str, plural: str, namespace: str, name: str,
                     patch: Obj) -> Obj:
        """JSON merge patch (null deletes a key)."""
        with _translated("patch", f"{plural}.{group} {namespace}/{name}"):
            result = self._custom.patch_namespaced_custom_object(
                group, version, namespace, plural, name, patch,
                _content_type="application/merge-patch+json", _request_timeout=self._timeout,
            )
        return cast(Obj, result)

    def delete_custom(self, group: str, version: str, plural: str, namespace: str,
                      name: str, resource_version: str | None = None) -> None:
        """Delete; with ``resource_version``, only the object still at it (409 otherwise: it
        changed since it was read and planned)."""
        body: Obj | None = None
        if resource_version is not None:
            body = {"kind": "DeleteOptions", "apiVersion": "v1",
                    "preconditions": {"resourceVersion": resource_version}}
        with _translated("delete", f"{plural}.{group} {namespace}/{name}"):
            self._rest("DELETE", api_path(f"apis/{group}/{version}", namespace, plural, name),
                       body=body)

    def get_namespace(self, name: str) -> Obj:
        with _translated("get", f"namespace {name}"):
            return self._rest("GET", f"/api/v1/namespaces/{quote(name, safe='')}")

    def patch_namespace_labels(self, name: str, labels: Mapping[str, str | None],
                               resource_version: str) -> Obj:
        """Set labels (None removes one), only if the namespace is still at
        ``resource_version`` (409 otherwise)."""
        body = {"metadata": {"resourceVersion": resource_version, "labels": dict(labels)}}
        with _translated("patch", f"namespace {name}"):
            return self._merge_patch(f"/api/v1/namespaces/{quote(name, safe='')}", body)

    def list_deployments(self, namespace: str) -> list[Obj]:
        with _translated("list", f"Deployments in namespace {namespace}"):
            return _items(self._rest("GET", api_path("apis/apps/v1", namespace, "deployments")))

    def get_deployment(self, namespace: str, name: str) -> Obj:
        with _translated("get", f"Deployment {namespace}/{name}"):
            return self._rest("GET", api_path("apis/apps/v1", namespace, "deployments", name))

    def restart_deployment(self, namespace: str, name: str, at: str) -> Obj:
        """What ``kubectl rollout restart`` does: stamp the pod template, which rolls the pods.
        The same ``at`` twice is one restart (a retried job does not restart again)."""
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}}
        with _translated("patch", f"Deployment {namespace}/{name}"):
            return self._merge_patch(api_path("apis/apps/v1", namespace, "deployments", name), body)

    def list_pod_disruption_budgets(self, namespace: str) -> list[Obj]:
        with _translated("list", f"PodDisruptionBudgets in namespace {namespace}"):
            return _items(self._rest(
                "GET", api_path("apis/policy/v1", namespace, "poddisruptionbudgets")))

    def list_horizontal_pod_autoscalers(self, namespace: str) -> list[Obj]:
        with _translated("list", f"HorizontalPodAutoscalers in namespace {namespace}"):
            return _items(self._rest(
                "GET", api_path("apis/autoscaling/v2", namespace, "horizontalpodautoscalers")))

    def list_pods(self, namespace: str, labels: Mapping[str, str]) -> list[Obj]:
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        with _translated("list", f"pods {selector} in namespace {namespace}"):
            return _items(self._rest("GET", api_path("api/v1", namespace, "pods"),
                                     query={"labelSelector": selector}))

    def list_nodes(self) -> list[Obj]:
        with _translated("list", "nodes"):
            return _items(self._rest("GET", "/api/v1/nodes"))

    def call(self, verb: str, what: str, method: str, path: str, *, body: Obj | None = None,
             content_type: str = "application/json") -> Obj:
        """One call by API path (``api_path``), its errors meshbot's (``verb`` and ``what`` name
        it in them): for the adapters of kinds this one does not cover."""
        with _translated(verb, what):
            return self._rest(method, path, body=body, content_type=content_type)

    def _merge_patch(self, path: str, body: Obj) -> Obj:
        return self._rest("PATCH", path, body=body, content_type="application/merge-patch+json")

    def _rest(self, method: str, path: str, *, query: Mapping[str, str] | None = None,
              body: Obj | None = None, content_type: str = "application/json") -> Obj:
        """One call through the client's REST layer (its configuration, auth and TLS), the
        answer as the API's own JSON; a non-2xx answer raises ``ApiException`` as the typed
        APIs do, for ``_translated``."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        request = self._api_client.param_serialize(
            method=method, resource_path=path, query_params=list((query or {}).items()),
            header_params=headers, body=body, auth_settings=["BearerToken"])
        response = self._api_client.call_api(
            *request, _request_timeout=self._timeout)
        response.read()  # type: ignore[no-untyped-call]
        text = (response.data or b"").decode("utf-8")
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=text, data=None)
        return cast(Obj, json.loads(text)) if text else {}


def api_path(group_version: str, namespace: str, plural: str, name: str | None = None) -> str:
    """``/api/v1/namespaces/<ns>/pods``, ``/apis/apps/v1/namespaces/<ns>/deployments/<name>``."""
    path = f"/{group_version}/namespaces/{quote(namespace, safe='')}/{plural}"
    return path if name is None else f"{path}/{quote(name, safe='')}"


def _items(listing: Obj) -> list[Obj]:
    return list(listing.get("items") or [])

@contextmanager
def _translated(verb: str, what: str) -> Iterator[None]:
    """Turn the client's exceptions into meshbot's, naming the request (``verb``, an RBAC verb)
    and the object concerned."""
    try:
        yield
    except ApiException as exc:
        raise _from_status(exc, verb, what) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:  # timeouts, refused, reset
        log.warning("Kubernetes API call about %s failed: %s: %s", what, type(exc).__name__, exc)
        raise MeshUnavailable(f"the Kubernetes API {in_words(exc)} (about {what})") from exc

def _from_status(exc: ApiException, verb: str,
                 what: str) -> PermanentError | MeshUnavailable | MeshConflict:
    status = int(exc.status or 0)
    if status == 403:
        return MeshForbidden(_forbidden(verb, what, _status_details(exc)))
    if status == 404:
        return MeshNotFound(f"{what} does not exist")
    if status == 409:
        return MeshConflict(f"{what} changed while meshbot was updating it", delay=0.2)
    if status == 429 or status >= 500:
        delay = _retry_after((exc.headers or {}).get("Retry-After"))
        return MeshUnavailable(f"the Kubernetes API answered {status} for {what}", delay=delay)
    return PermanentError(f"the Kubernetes API refused {what}: {status} {exc.reason}")

def _forbidden(verb: str, what: str, details: Mapping[str, Any]) -> str:
    """``meshbot is not allowed to patch virtualservices.networking.istio.io (VirtualService
    production/checkout)``: the verb and the resource as its RBAC role would name them."""
    plural, group = details.get("kind"), details.get("group")
    resource = f"{plural}.{group}" if plural and group else str(plural or "")
    target = f"{resource} ({what})" if resource else what
    return (f"meshbot is not allowed to {verb} {target}: its Kubernetes role does not grant "
            "that (403 Forbidden), and the refused call changed nothing")

def _status_details(exc: ApiException) -> Mapping[str, Any]:
    """The ``details`` of the Status a refusal carries; empty when the body is not one."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return {}
    details = body.get("details") if isinstance(body, dict) else None
    return details if isinstance(details, dict) else {}

def _retry_after(value: str | None) -> float:
    """A ``Retry-After`` header in seconds: delta-seconds or an HTTP date; 1 s without one."""
    if not value:
        return 1.0
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):  # neither: a hint not worth failing over
        return 1.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max((when - datetime.datetime.now(datetime.UTC)).total_seconds(), 0.0)
