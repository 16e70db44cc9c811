"""The runbook's sample mesh, seeded into the Kubernetes emulator (or any cluster that has
``put_object``: the suite's real kube-apiserver).

Namespaces production, staging, istio-system and meshbot; in production the nine services of the
runbook's migration phases, each with a VirtualService (one http route, no match, to subsets
stable 100 / canary 0), a DestinationRule (stable: version v1, canary: version v2), Deployments
``<svc>-v1`` and ``<svc>-v2`` and a ready Pod for each (so "the canary subset has ready pods" can
be checked); istiod with its PodDisruptionBudget and HorizontalPodAutoscaler in istio-system.

Run ``python -m playground.sample_mesh KUBECONFIG_PATH`` to serve it until interrupted.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import Any, Protocol

from playground.kube_emulator import start_cluster

Obj = dict[str, Any]


class ObjectWriter(Protocol):
    """Where the sample mesh is written: the emulator, or the suite's real API server."""

    def put_object(self, group: str, version: str, plural: str, obj: Obj) -> Obj: ...

NAMESPACE = "production"
NAMESPACES = ("production", "staging", "istio-system", "meshbot")
TIERS: dict[str, tuple[str, ...]] = {
    "critical": ("payment-service", "auth-service", "order-service"),
    "core": ("user-service", "notification-service", "analytics-service"),
    "pilot": ("logging-service", "metrics-collector", "health-checker"),
}
SERVICES: tuple[str, ...] = tuple(svc for services in TIERS.values() for svc in services)
NETWORKING = ("networking.istio.io", "v1beta1")
VERSIONS = {"stable": "v1", "canary": "v2"}


def virtual_service(service: str, namespace: str = NAMESPACE) -> Obj:
    return {
        "apiVersion": "/".join(NETWORKING),
        "kind": "VirtualService",
        "metadata": {"name": service, "namespace": namespace},
        "spec": {
            "hosts": [service],
            "http": [
                {
                    "route": [
                        {"destination": {"host": service, "subset": "stable"}, "weight": 100},
                        {"destination": {"host": service, "subset": "canary"}, "weight": 0},
                    ]
                }
            ],
        },
    }


def destination_rule(service: str, namespace: str = NAMESPACE) -> Obj:
    return {
        "apiVersion": "/".join(NETWORKING),
        "kind": "DestinationRule",
        "metadata": {"name": service, "namespace": namespace},
        "spec": {
            "host": service,
            "subsets": [
                {"name": subset, "labels": {"version": version}}
                for subset, version in VERSIONS.items()
            ],
        },
    }


def deployment(name: str, labels: dict[str, str], namespace: str, replicas: int = 1) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {"containers": [{"name": labels["app"], "image": f"{name}:latest"}]},
            },
        },
        "status": {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas},
    }


def ready_pod(name: str, labels: dict[str, str], namespace: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {"containers": [{"name": labels["app"], "image": f"{labels['app']}:latest"}]},
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "ContainersReady", "status": "True"},
            ],
        },
    }


def istio_system() -> list[tuple[str, str, str, Obj]]:
    ns, labels = "istio-system", {"app": "istiod"}
    objects = [("apps", "v1", "deployments", deployment("istiod", labels, ns, replicas=3))]
    objects += [("", "v1", "pods", ready_pod(f"istiod-{i}", labels, ns)) for i in range(3)]
    objects.append(
        (
            "policy",
            "v1",
            "poddisruptionbudgets",
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "istiod", "namespace": ns},
                "spec": {"minAvailable": 2, "selector": {"matchLabels": labels}},
            },
        )
    )
    objects.append(
        (
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "istiod", "namespace": ns},
                "spec": {
                    "scaleTargetRef": {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": "istiod",
                    },
                    "minReplicas": 3,
                    "maxReplicas": 10,
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {"type": "Utilization", "averageUtilization": 70},
                            },
                        }
                    ],
                },
            },
        )
    )
    return objects


def sample_mesh_objects() -> list[tuple[str, str, str, Obj]]:
    """Every object of the sample mesh as (group, version, plural, object)."""
    objects: list[tuple[str, str, str, Obj]] = [
        (
            "",
            "v1",
            "namespaces",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": _namespace_labels(ns)},
            },
        )
        for ns in NAMESPACES
    ]
    for service in SERVICES:
        objects.append((*NETWORKING, "virtualservices", virtual_service(service)))
        objects.append((*NETWORKING, "destinationrules", destination_rule(service)))
        for version in VERSIONS.values():
            labels = {"app": service, "version": version}
            name = f"{service}-{version}"
            objects.append(("apps", "v1", "deployments", deployment(name, labels, NAMESPACE)))
            objects.append(("", "v1", "pods", ready_pod(f"{name}-0", labels, NAMESPACE)))
    return objects + istio_system()


def _namespace_labels(namespace: str) -> dict[str, str]:
    labels = {"kubernetes.io/metadata.name": namespace, "name": namespace}
    if namespace == "production":
        labels["istio-injection"] = "enabled"
    return labels


def seed_sample_mesh(cluster: ObjectWriter) -> None:
    for group, version, plural, obj in sample_mesh_objects():
        cluster.put_object(group, version, plural, obj)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m playground.sample_mesh KUBECONFIG_PATH", file=sys.stderr)
        return 2
    with start_cluster() as cluster:
        seed_sample_mesh(cluster)
        path = cluster.write_kubeconfig(Path(argv[0]))
        print(f"Kubernetes emulator with the sample mesh at {cluster.url}; KUBECONFIG={path}")
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how the playground stops
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
