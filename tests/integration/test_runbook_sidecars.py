"""`/mesh inject`, `/mesh inject-namespace` and `/mesh mtls` as a person uses them: through the
bot's real listener (grammar, policy, approvals), a real RQ worker, the real kube-apiserver
(meshbot under the chart's RBAC) and the Slack stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cloudcoil.models.istio.security import v1beta1 as security

from jobs.adapters.audit import AuditEntry, AuditLog
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh
from tests.fixtures.slack import fail_post_saying
from tests.integration.chatops import APPROVERS, ChatOps
from tests.integration.test_istio_models import assert_valid_istio
from tests.integration.test_runbook_routing import run, thread, write_runbook_policy
from tests.integration.test_worker_jobs import release_retries

NS = "production"
INJECT = "sidecar.istio.io/inject"
A1 = APPROVERS[0]
PILOT = ("logging-service", "metrics-collector", "health-checker")


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    """The runbook policy plus a service living in meshbot's own namespace and one that has no
    Deployment, for the refusals."""
    path = write_runbook_policy(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["services"]["meshbot-ui"] = {"tier": "pilot", "namespace": "meshbot"}
    data["services"]["ghost-service"] = {"tier": "pilot"}
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def ops(mesh: Mesh) -> Iterator[ChatOps]:
    yield ChatOps.start(mesh)


def deployment(mesh: Mesh, name: str, namespace: str = NS) -> dict[str, Any]:
    return mesh.cluster.get("apps", "v1", "deployments", namespace, name)


def template_annotations(mesh: Mesh, name: str) -> dict[str, str]:
    meta = deployment(mesh, name)["spec"]["template"]["metadata"]
    return dict(meta.get("annotations") or {})


def namespace(mesh: Mesh, name: str) -> dict[str, Any]:
    return mesh.cluster.get("", "v1", "namespaces", None, name)


def labels(mesh: Mesh, name: str) -> dict[str, str]:
    return dict(namespace(mesh, name)["metadata"].get("labels") or {})


def unlabel(mesh: Mesh, name: str, label: str = "istio-injection") -> None:
    mesh.cluster.change("", "v1", "namespaces", None, name,
                        lambda ns: ns["metadata"]["labels"].pop(label, None))


def annotate(mesh: Mesh, name: str) -> None:
    """A Deployment already migrated by hand."""
    mesh.cluster.change("apps", "v1", "deployments", NS, name, lambda d: d["spec"]["template"][
        "metadata"].setdefault("annotations", {}).update({INJECT: "true"}))


def approved(ops: ChatOps, text: str) -> str:
    """Type a command that needs one approval, approve it, run it; its response_url."""
    url = run(ops, text)
    ops.react(A1, ops.approval().ts)
    ops.run()
    return url


def outcomes(mesh: Mesh, target: str) -> list[str]:
    return [e.outcome for e in AuditLog(mesh.redis).last(target, 20)]


def peer_authentication(mesh: Mesh, ns: str) -> dict[str, Any]:
    obj = mesh.cluster.get("security.istio.io", "v1beta1", "peerauthentications", ns, "default")
    model = security.PeerAuthentication.model_validate(obj)  # Istio's published model
    assert model.spec is not None
    assert model.spec.model_dump(by_alias=True, exclude_none=True, mode="json") == obj["spec"]
    return obj


def destination_rule(mesh: Mesh, name: str, ns: str = NS) -> dict[str, Any]:
    return mesh.cluster.get("networking.istio.io", "v1beta1", "destinationrules", ns, name)


# --- /mesh inject ----------------------------------------------------------------------------


def test_inject_annotates_every_deployment_of_the_service(ops: ChatOps, mesh: Mesh) -> None:
    before = deployment(mesh, "logging-service-v1")
    run(ops, "inject logging-service")

    for name in ("logging-service-v1", "logging-service-v2"):
        assert template_annotations(mesh, name) == {INJECT: "true"}
    after = deployment(mesh, "logging-service-v1")
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    # Only the annotation: labels, containers and replicas as they were.
    after["spec"]["template"]["metadata"].pop("annotations")
    assert after["spec"] == before["spec"]
    texts = thread(ops, "*Sidecar injection*")
    assert "`logging-service-v1`, `logging-service-v2`" in texts[0]
    assert "Tier order" not in " ".join(texts)  # pilot comes first
    assert "`logging-service-v1`: pod template changed (generation 2)" in texts[-1]
    assert "kubectl rollout status deployment -l app=logging-service" in texts[-1]
    entry = AuditLog(mesh.redis).last("logging-service", 1)[0]
    assert (entry.action, entry.outcome) == ("inject", "done")
    assert "logging-service-v1, logging-service-v2" in entry.detail


def test_inject_again_restarts_nothing(ops: ChatOps, mesh: Mesh) -> None:
    run(ops, "inject health-checker")
    version = deployment(mesh, "health-checker-v1")["metadata"]["resourceVersion"]
    run(ops, "inject health-checker")
    assert deployment(mesh, "health-checker-v1")["metadata"]["resourceVersion"] == version
    assert "already annotated; not restarted" in thread(ops, "*Sidecar injection*")[-1]


def test_inject_retried_after_its_writes_landed_says_what_it_changed(
        ops: ChatOps, mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slack answers 500 to the report (the annotations had landed): the retry finds them set
    and says — and audits — that this request set them and the pods roll, once; not "nothing
    to do"."""
    fail_post_saying(mesh.slack, monkeypatch, "Injection requested")
    run(ops, "inject logging-service")
    while release_retries(mesh.redis):  # RQ's retry, as its time comes
        ops.run()

    for name in ("logging-service-v1", "logging-service-v2"):
        assert template_annotations(mesh, name) == {INJECT: "true"}
    texts = thread(ops, "*Sidecar injection*")
    done = [t for t in texts if t.startswith(":white_check_mark:")]
    assert len(done) == 1 and "Injection requested" in done[0], texts
    assert "`logging-service-v1`: pod template changed (generation 2)" in done[0]
    entries = [e for e in AuditLog(mesh.redis).last("logging-service", 5)
               if e.action == "inject"]
    assert [e.outcome for e in entries] == ["done"], entries
    assert "logging-service-v1, logging-service-v2" in entries[0].detail


def test_inject_warns_when_the_tier_order_is_skipped(ops: ChatOps, mesh: Mesh) -> None:
    unlabel(mesh, NS)  # no namespace-wide injection: only annotated Deployments count
    annotate(mesh, "metrics-collector-v1")  # half migrated: still counts as not injected
    run(ops, "inject user-service")

    warning = thread(ops, "*Sidecar injection*")[1]
    assert "Tier order skipped" in warning and "`user-service` is core" in warning
    assert "pilot: `health-checker`, `logging-service`, `metrics-collector`" in warning
    assert template_annotations(mesh, "user-service-v1") == {INJECT: "true"}  # done anyway

    for service in PILOT:
        for version in ("v1", "v2"):
            annotate(mesh, f"{service}-{version}")
    run(ops, "inject notification-service")
    assert not any("Tier order" in t for t in thread(ops, "`notification-service`"))


def test_inject_refusals_change_nothing(ops: ChatOps, mesh: Mesh) -> None:
    url = run(ops, "inject ghost-service")
    assert any("no Deployment labelled `app=ghost-service`" in t for t in ops.told(url))
    url = run(ops, "inject meshbot-ui")
    assert any("`meshbot` is meshbot's own namespace and is never injected" in t
               for t in ops.told(url))
    mesh.cluster.change("apps", "v1", "deployments", NS, "order-service-v2", lambda d: d[
        "metadata"].setdefault("annotations", {}).update({"argocd.argoproj.io/instance": "o"}))
    url = run(ops, "inject order-service")
    assert any("Argo CD would revert" in t for t in ops.told(url))
    assert template_annotations(mesh, "order-service-v1") == {}
    assert not [m for m in mesh.slack.roots(CHANNEL) if "Sidecar injection" in m.text]


# --- /mesh inject-namespace ------------------------------------------------------------------


def test_inject_namespace_labels_after_approval(ops: ChatOps, mesh: Mesh) -> None:
    run(ops, "inject-namespace staging")
    assert "istio-injection" not in labels(mesh, "staging")  # waits for the approval
    assert "sidecar injection turned on for namespace `staging`" in ops.approval().text
    ops.react(A1, ops.approval().ts)
    ops.run()

    assert labels(mesh, "staging")["istio-injection"] == "enabled"
    assert labels(mesh, "staging")["name"] == "staging"  # other labels kept
    texts = thread(ops, "*Namespace injection*")
    assert "`staging` labelled `istio-injection=enabled` (was unset)" in texts[1]
    assert outcomes(mesh, "staging")[0] == "done"


def test_inject_namespace_retried_after_its_label_landed_says_what_it_changed(
        ops: ChatOps, mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slack answers 500 to the report (the label had landed): the retry says — and audits —
    that this request set it, from unset; not "already labelled"."""
    fail_post_saying(mesh.slack, monkeypatch, "labelled `istio-injection=enabled`")
    approved(ops, "inject-namespace staging")
    while release_retries(mesh.redis):  # RQ's retry, as its time comes
        ops.run()

    assert labels(mesh, "staging")["istio-injection"] == "enabled"
    texts = thread(ops, "*Namespace injection*")
    assert [t for t in texts if t.startswith(":white_check_mark: `staging`")] == [
        ":white_check_mark: `staging` labelled `istio-injection=enabled` (was unset). New pods "
        "get a sidecar; running pods get one when they restart."], texts
    entries = [e for e in AuditLog(mesh.redis).last("staging", 9) if e.outcome == "done"]
    assert [e.detail for e in entries] == ["istio-injection unset → enabled"], entries


def test_inject_namespace_warns_about_services_not_migrated(ops: ChatOps, mesh: Mesh) -> None:
    unlabel(mesh, NS)
    for service in PILOT:
        for version in ("v1", "v2"):
            annotate(mesh, f"{service}-{version}")
    approved(ops, f"inject-namespace {NS}")
    texts = thread(ops, "*Namespace injection*")
    assert "Tier order skipped" in texts[1] and "pilot: " not in texts[1]
    assert "critical: `auth-service`, `order-service`, `payment-service`" in texts[1]
    assert labels(mesh, NS)["istio-injection"] == "enabled"


def test_inject_namespace_keeps_revision_based_injection(ops: ChatOps, mesh: Mesh) -> None:
    mesh.cluster.put_object("", "v1", "namespaces", {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "payments-next", "labels": {"istio.io/rev": "1-22"}}})
    approved(ops, "inject-namespace payments-next")
    # Only the revision label (and the name label a real server sets on every namespace).
    assert labels(mesh, "payments-next") == {"istio.io/rev": "1-22",
                                             "kubernetes.io/metadata.name": "payments-next"}
    assert "revision-based injection (`istio.io/rev=1-22`)" in thread(
        ops, "*Namespace injection*")[1]


def test_inject_namespace_refusals_change_nothing(ops: ChatOps, mesh: Mesh) -> None:
    before = labels(mesh, "meshbot")
    # Refused before approvers are asked: there is nothing they could approve.
    url = run(ops, "inject-namespace meshbot")
    assert any("meshbot's own namespace and is never injected" in t for t in ops.told(url))
    assert labels(mesh, "meshbot") == before
    url = run(ops, "inject-namespace nowhere")
    assert any("namespace `nowhere` does not exist" in t for t in ops.told(url))
    assert not [m for m in mesh.slack.roots(CHANNEL) if "Approval needed" in m.text]
    assert outcomes(mesh, "meshbot")[0] == "refused"


# --- /mesh mtls ------------------------------------------------------------------------------


def test_mtls_strict_sets_peer_authentication_and_istio_mutual(ops: ChatOps, mesh: Mesh) -> None:
    mesh.cluster.put_object("networking.istio.io", "v1beta1", "destinationrules", {
        "apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
        "metadata": {"name": "payments-psp", "namespace": NS},
        "spec": {"host": "api.psp.example.com", "trafficPolicy": {"tls": {"mode": "SIMPLE"}}}})
    before = destination_rule(mesh, "payment-service")
    approved(ops, f"mtls {NS} strict")

    assert peer_authentication(mesh, NS)["spec"] == {"mtls": {"mode": "STRICT"}}
    rule = destination_rule(mesh, "payment-service")
    assert rule["spec"] == dict(before["spec"], trafficPolicy={"tls": {"mode": "ISTIO_MUTUAL"}})
    assert_valid_istio(rule)
    assert destination_rule(mesh, "payments-psp")["spec"]["trafficPolicy"] == {
        "tls": {"mode": "SIMPLE"}}  # TLS origination to an outside host: left alone
    texts = thread(ops, "*mTLS*")
    assert "PeerAuthentication `default` to STRICT" in texts[0]
    assert "`payment-service`" in texts[1] and "`payments-psp` (SIMPLE)" in texts[1]
    assert "PeerAuthentication `production/default` created with mTLS STRICT" in texts[2]
    assert "none → STRICT" in AuditLog(mesh.redis).last(NS, 5)[0].detail


def mtls_done(mesh: Mesh) -> AuditEntry:
    """The one entry an mtls request ended with (its approval's own entries aside)."""
    entries = [e for e in AuditLog(mesh.redis).last(NS, 9)
               if e.action == "mtls" and e.outcome not in ("approval requested", "approved")]
    assert [e.outcome for e in entries] == ["done"], entries
    return entries[0]


@pytest.mark.parametrize("refused", ["ISTIO_MUTUAL` set on", "created with mTLS STRICT"])
def test_mtls_strict_retried_after_its_writes_landed_says_what_it_changed(
        ops: ChatOps, mesh: Mesh, monkeypatch: pytest.MonkeyPatch, refused: str) -> None:
    """Slack answers 500 to a report said after a write landed (the DestinationRules', or the
    PeerAuthentication's): the retry finds its own writes and reports — and audits — them as
    this request's changes, once; not "already so" nor "was already STRICT"."""
    fail_post_saying(mesh.slack, monkeypatch, refused)
    approved(ops, f"mtls {NS} strict")
    while release_retries(mesh.redis):  # RQ's retry, as its time comes
        ops.run()

    assert peer_authentication(mesh, NS)["spec"] == {"mtls": {"mode": "STRICT"}}
    assert destination_rule(mesh, "payment-service")["spec"]["trafficPolicy"] == {
        "tls": {"mode": "ISTIO_MUTUAL"}}
    texts = thread(ops, "*mTLS*")
    rules = [t for t in texts if "ISTIO_MUTUAL` set on" in t]
    assert len(rules) == 1 and "`payment-service`" in rules[0], texts
    assert "already so" not in rules[0], texts
    peers = [t for t in texts if "PeerAuthentication `production/default`" in t]
    assert peers == [":white_check_mark: PeerAuthentication `production/default` created with "
                     "mTLS STRICT."], texts
    detail = mtls_done(mesh).detail
    assert "none → STRICT" in detail and "payment-service" in detail
    assert "no DestinationRule" not in detail


def test_mtls_permissive_retried_after_its_write_landed_says_the_mode_it_replaced(
        ops: ChatOps, mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    mesh.cluster.put_object("security.istio.io", "v1beta1", "peerauthentications", {
        "apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": NS}, "spec": {"mtls": {"mode": "STRICT"}}})
    fail_post_saying(mesh.slack, monkeypatch, "`production/default`: mTLS STRICT")
    approved(ops, f"mtls {NS} permissive")
    while release_retries(mesh.redis):
        ops.run()

    assert peer_authentication(mesh, NS)["spec"] == {"mtls": {"mode": "PERMISSIVE"}}
    peers = [t for t in thread(ops, "*mTLS*") if "PeerAuthentication `production/default`" in t]
    assert peers == [":white_check_mark: PeerAuthentication `production/default`: mTLS STRICT "
                     "→ PERMISSIVE."], peers
    assert "STRICT → PERMISSIVE" in mtls_done(mesh).detail


def test_mtls_changes_only_the_mode(ops: ChatOps, mesh: Mesh) -> None:
    mesh.cluster.put_object("security.istio.io", "v1beta1", "peerauthentications", {
        "apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": NS, "labels": {"team": "sre"}},
        "spec": {"mtls": {"mode": "STRICT"}, "portLevelMtls": {"9090": {"mode": "DISABLE"}}}})
    rules = destination_rule(mesh, "user-service")
    approved(ops, f"mtls {NS} permissive")

    peer = peer_authentication(mesh, NS)
    assert peer["spec"] == {"mtls": {"mode": "PERMISSIVE"},
                            "portLevelMtls": {"9090": {"mode": "DISABLE"}}}
    assert peer["metadata"]["labels"] == {"team": "sre"}
    assert destination_rule(mesh, "user-service") == rules  # PERMISSIVE leaves clients alone
    assert "mTLS STRICT → PERMISSIVE" in thread(ops, "*mTLS*")[-2]


def test_mtls_strict_is_refused_on_meshbots_namespace(ops: ChatOps, mesh: Mesh) -> None:
    url = run(ops, "mtls meshbot strict")  # refused before any approval is asked
    assert any("`meshbot` is meshbot's own namespace and is never switched to STRICT" in t
               for t in ops.told(url))
    with pytest.raises(KeyError):
        mesh.cluster.get("security.istio.io", "v1beta1", "peerauthentications", "meshbot",
                         "default")
    assert outcomes(mesh, "meshbot")[0] == "refused"
    assert OPERATOR in {e.actor for e in AuditLog(mesh.redis).last("meshbot", 5)}
