"""The Kubernetes adapter reads core, apps, policy and autoscaling objects without the client's
typed APIs: building ``CoreV1Api`` imports some 250 pydantic models (about 20 MB of every
worker's memory) for answers meshbot turns straight back into dicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures.real_cluster import RealCluster

ROOT = Path(__file__).resolve().parents[2]
NS, SVC = "production", "payment-service"

EXERCISE = f"""
import json, sys
from jobs.adapters.kube import KubeClient
with KubeClient.from_environment() as kube:
    answers = {{
        "ready": kube.count_ready_pods({NS!r}, {{"app": {SVC!r}}}),
        "pods": len(kube.list_pods({NS!r}, {{"app": {SVC!r}}})),
        "namespace": kube.get_namespace({NS!r})["metadata"]["name"],
        "deployments": len(kube.list_deployments({NS!r})),
        "pdbs": len(kube.list_pod_disruption_budgets({NS!r})),
    }}
answers["models"] = sorted(m for m in sys.modules if m.startswith("kubernetes.client.models."))
print(json.dumps(answers))
"""


def test_core_and_apps_reads_load_no_typed_models(cluster: RealCluster) -> None:
    # A fresh interpreter: this test process has imported whatever other tests needed.
    done = subprocess.run([sys.executable, "-c", EXERCISE], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert answers["ready"] >= 1 and answers["pods"] >= answers["ready"]
    assert answers["namespace"] == NS and answers["deployments"] >= 1
    # CustomObjectsApi (Istio objects) brings a handful; the typed core API brought ~250.
    assert len(answers["models"]) < 20, answers["models"]
